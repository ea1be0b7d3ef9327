"""Pure parts of the etcd source: options, key ranges, error mapping, revision parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher import plugins
from watcher.core.errors import ConflictError, SettingsError, SourceUnavailable
from watcher.sources.base import Publisher, Source
from watcher.sources.etcd import EtcdOptions, EtcdSource, _parse_revision
from watcher.sources.etcd_wire import (
    GatewayRefused,
    KeyValue,
    TokenExpired,
    b64,
    classify,
    prefix_range_end,
    unb64,
)

CTX = plugins.PluginContext(state_dir=Path("/nonexistent"), environment="test")


async def test_registry_builds_a_source_and_publisher() -> None:
    source = plugins.create("source", {"kind": "etcd", "endpoints": ["http://127.0.0.1:1"],
                                       "prefix": "/p/"}, CTX)
    try:
        assert isinstance(source, EtcdSource)
        assert isinstance(source, Source) and isinstance(source, Publisher)
        assert source.prefix == b"/p/"
    finally:
        await source.aclose()


@pytest.mark.parametrize(("options", "field"), [
    ({"endpoint": ["http://x"]}, "source.endpoint"),
    ({"endpoints": []}, "source.endpoints"),
    ({"endpoints": ["127.0.0.1:2379"]}, "source.endpoints: endpoint"),
    ({"timeout": 0}, "source.timeout"),
    ({"resync_interval": -1}, "source.resync_interval"),
    ({"prefix": ""}, "source.prefix"),
])
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(SettingsError, match=field.replace(".", r"\.")):
        EtcdSource.create(options, CTX)


def test_password_is_secret() -> None:
    opts = EtcdOptions.model_validate({"username": "u", "password": "hunter2"})
    assert "hunter2" not in repr(opts) and "hunter2" not in str(opts.model_dump())
    assert opts.password is not None and opts.password.get_secret_value() == "hunter2"


def test_tls_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="go together"):
        EtcdOptions.model_validate({"cert_file": str(tmp_path / "c.pem")}).tls()
    with pytest.raises(SettingsError, match="cannot load TLS files"):
        EtcdOptions.model_validate({"ca_file": str(tmp_path / "missing.pem")}).tls()
    assert EtcdOptions().tls() is None


@pytest.mark.parametrize(("prefix", "end"), [
    (b"/model-watcher/models/", b"/model-watcher/models0"),
    (b"a", b"b"),
    (b"a\xff", b"b"),
    (b"\xff\xff", b"\x00"),
])
def test_prefix_range_end(prefix: bytes, end: bytes) -> None:
    assert prefix_range_end(prefix) == end


def test_base64_round_trip_and_key_values() -> None:
    assert unb64(b64("/a/b")) == b"/a/b"
    assert unb64(None) == b"" and unb64("") == b""
    kv = KeyValue.from_json({"key": b64("/p/m"), "mod_revision": "42"})  # empty value omitted
    assert kv == KeyValue(b"/p/m", b"", 42)


@pytest.mark.parametrize(("code", "message", "kind"), [
    (16, "etcdserver: invalid auth token", TokenExpired),
    (3, "etcdserver: user name is empty", TokenExpired),
    (14, "etcdserver: no leader", SourceUnavailable),
    (0, "etcdserver: request timed out", SourceUnavailable),
    (4, "context deadline exceeded", SourceUnavailable),
    (7, "etcdserver: permission denied", GatewayRefused),
    (3, "etcdserver: authentication failed, invalid user ID or password", GatewayRefused),
])
def test_classify_gateway_errors(code: int, message: str, kind: type[Exception]) -> None:
    assert isinstance(classify(code, message), kind)


def test_parse_revision() -> None:
    assert _parse_revision("17") == 17
    assert _parse_revision("0") == 0 and _parse_revision("") == 0
    with pytest.raises(ConflictError, match="not an etcd revision"):
        _parse_revision("abc")
    with pytest.raises(ConflictError, match="negative"):
        _parse_revision("-3")


async def test_change_names_strip_the_prefix() -> None:
    source = EtcdSource(EtcdOptions(prefix="/mw/"))
    try:
        put = source._change(KeyValue(b"/mw/qwen", b"doc", 7))
        assert (put.key, put.revision, put.content) == ("qwen", "7", b"doc")
        gone = source._change(KeyValue(b"/mw/qwen", b"", 9), deleted=True)
        assert gone.deleted and gone.revision == "9"
    finally:
        await source.aclose()
