"""Pure parts of the Nacos source: options, data id <-> key mapping, md5 revisions, registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from watcher import plugins
from watcher.core.errors import SettingsError, SourceUnavailable
from watcher.sources.base import DELETED, Publisher, Source
from watcher.sources.nacos import NacosSource
from watcher.sources.nacos_options import NacosOptions, content_md5, key_of


def ctx(tmp_path: Path) -> plugins.PluginContext:
    return plugins.PluginContext(state_dir=tmp_path, environment="test")


async def test_registry_builds_a_source_and_publisher(tmp_path: Path) -> None:
    source = plugins.create("source", {"kind": "nacos", "server_addresses": "127.0.0.1:1",
                                       "data_ids": ["qwen-chat.yaml"]}, ctx(tmp_path))
    try:
        assert isinstance(source, NacosSource)
        assert isinstance(source, Source) and isinstance(source, Publisher)
        assert source.options.server_addresses == ["127.0.0.1:1"]
        assert source.options.group == "MODEL_SERVING"
    finally:
        await source.aclose()


@pytest.mark.parametrize("options, field", [
    ({"server_addresses": ["127.0.0.1"]}, "port required"),
    ({"server_addresses": ["nacos:99999"]}, "port required"),
    ({"server_addresses": []}, "server_addresses"),
    ({"data_ids": ["a.yaml"], "data_id_pattern": "*.yaml"}, "not both"),
    ({"data_ids": ["a.yaml", "a.json"]}, "same model"),
    ({"username": "nacos"}, "go together"),
    ({"tls": {"cert_file": "/c.pem"}}, "all needed"),
    ({"server_addresses": ["[::1]:8848"]}, "IPv6"),
    ({"surprise": 1}, "source.surprise"),
    ({"timeout": 0}, "source.timeout"),
])
def test_bad_options_name_the_field(tmp_path: Path, options: dict[str, object], field: str) -> None:
    with pytest.raises(SettingsError) as err:
        NacosSource.create(options, ctx(tmp_path))
    assert field in err.value.reason


def test_password_is_secret() -> None:
    opts = NacosOptions.model_validate({"username": "u", "password": "hunter2-secret"})
    assert "hunter2-secret" not in repr(opts) and "hunter2-secret" not in str(opts.model_dump())


@pytest.mark.parametrize("data_id, key", [
    ("qwen-chat.yaml", "qwen-chat"), ("qwen-chat.json", "qwen-chat"), ("llama3", "llama3"),
    ("v1.2.model.yml", "v1.2.model"), (".hidden", ".hidden"),
])
def test_key_is_the_data_id_without_its_extension(data_id: str, key: str) -> None:
    assert key_of(data_id) == key


def test_revision_is_the_md5_nacos_computes() -> None:
    text = "name: qwen-chat\nnote: 模型\n"
    assert content_md5(text) == hashlib.md5(text.encode("utf-8")).hexdigest()
    assert content_md5(text.encode("utf-8")) == content_md5(text)


def test_changes_from_content(tmp_path: Path) -> None:
    source = NacosSource(NacosOptions(), ctx(tmp_path))
    change = source._change("qwen.yaml", "name: qwen\n")
    assert (change.key, change.revision, change.content) == (
        "qwen", content_md5("name: qwen\n"), b"name: qwen\n")
    gone = source._change("qwen.yaml", "")  # what a push of a deleted config carries
    assert gone.deleted and gone.revision == DELETED and gone.key == "qwen"


def test_data_id_selection_and_publishing_names() -> None:
    listed = NacosOptions(data_ids=["qwen-chat.json", "llama.yaml"])
    assert listed.pattern is None
    assert listed.matches("llama.yaml") and not listed.matches("other.yaml")
    assert listed.data_id_for("qwen-chat") == "qwen-chat.json"
    assert listed.data_id_for("new-model") == "new-model.yaml"

    default = NacosOptions()
    assert default.pattern == "*" and default.matches("anything.txt")
    pattern = NacosOptions(data_id_pattern="*.yaml", extension=".yml")
    assert pattern.matches("a.yaml") and not pattern.matches("a.json")
    assert pattern.data_id_for("a") == "a.yml"


def test_urls_and_grpc_endpoints() -> None:
    opts = NacosOptions(server_addresses="10.0.0.1:8848, https://nacos.example:9848")
    assert opts.base_urls() == ["http://10.0.0.1:8848/nacos", "https://nacos.example:9848/nacos"]
    assert opts.grpc_endpoints() == [("10.0.0.1", 9848), ("nacos.example", 10848)]
    files = {"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem"}
    tls = NacosOptions(server_addresses=["n:8848", "http://m:8848"], context_path="/", tls=files)
    assert tls.base_urls() == ["https://n:8848", "http://m:8848"]  # gRPC TLS, plain HTTP


async def test_unreachable_server_is_source_unavailable(tmp_path: Path) -> None:
    from tests.infra.common import free_port, port_open

    port = free_port()
    while port_open(port + 1000) or port > 64000:  # nothing listens on either port
        port = free_port()
    for auth in ({}, {"username": "nacos", "password": "pw"}):
        source = NacosSource.create({"server_addresses": [f"127.0.0.1:{port}"], "timeout": 1,
                                     "data_ids": ["m.yaml"], **auth}, ctx(tmp_path))
        try:
            with pytest.raises(SourceUnavailable) as err:
                await source.snapshot()
            assert f"127.0.0.1:{port}" in err.value.reason
            with pytest.raises(SourceUnavailable):
                await source.publish("m", b"name: m\n")
        finally:
            await source.aclose()


def test_unreadable_tls_files_are_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        NacosSource.create({"tls": {"ca_file": str(tmp_path / "missing-ca.pem"),
                                    "cert_file": "/c.pem", "key_file": "/k.pem"}}, ctx(tmp_path))
    assert "source.tls" in err.value.reason


async def test_a_closed_sdk_connection_ends_its_bi_stream_request_iterator(tmp_path: Path) -> None:
    """grpc.aio feeds a bi-stream from the SDK's `request_payloads()` until it ends; the SDK's
    own never ends, so each outage left a task pending until GC (two asyncio ERRORs). The
    patch applied with the SDK's config (nacos_sdk.client_config) ends it at close()."""
    import asyncio

    from v2.nacos.transport.grpc_connection import GrpcConnection

    from watcher.sources.nacos_sdk import client_config

    client_config(NacosOptions(server_addresses=["127.0.0.1:1"]), tmp_path)
    conn = GrpcConnection(None, "c1", None, None, None)
    payloads = conn.request_payloads()
    await conn.send_bi_request("p1")
    assert await asyncio.wait_for(payloads.__anext__(), 1) == "p1"
    waiting = asyncio.ensure_future(payloads.__anext__())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await conn.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)
