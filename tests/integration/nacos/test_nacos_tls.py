"""The Nacos source over gRPC TLS with client certificates, against a real TLS-only Nacos.

A second server of its own (TLS, mutual auth, no plaintext fallback, auth on); the open API
(login, the tests' own writes) stays plain HTTP on that server, hence the `http://` address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.common import eventually
from tests.infra.etcd import Tls
from tests.infra.nacos_server import NacosServer
from watcher.fakes.sink import watching
from watcher.plugins import PluginContext
from watcher.sources.nacos import NacosSource

GROUP = "MW_TLS"


@pytest.fixture(scope="module")
def tls_nacos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NacosServer, Tls]]:
    root = tmp_path_factory.mktemp("nacos-tls")
    tls = Tls(root / "tls")
    pre = "nacos.remote.server.rpc.tls."
    server = NacosServer(root / "home", properties={
        pre + "enableTls": "true", pre + "compatibility": "false", pre + "sslProvider": "JDK",
        pre + "certChainFile": f"file:{tls.server_cert}",
        pre + "certPrivateKey": f"file:{tls.server_key}",
        pre + "mutualAuthEnable": "true", pre + "trustCollectionCertFile": f"file:{tls.ca}",
    }).start()
    try:
        yield server, tls
    finally:
        server.stop()


def source(server: NacosServer, state: Path, tls: Tls | None) -> NacosSource:
    options: dict[str, Any] = {
        "server_addresses": [f"http://{server.address}"], "group": GROUP,
        "username": server.username, "password": server.password, "data_ids": ["t.yaml"],
        "timeout": 2.0, "max_backoff": 1.0, "check_interval": 0.5}
    if tls is not None:
        options["tls"] = {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert),
                          "key_file": str(tls.client_key)}
    return NacosSource.create(options, PluginContext(state_dir=state, environment="test"))


async def test_tls_with_client_certificates(tls_nacos: tuple[NacosServer, Tls],
                                            tmp_path: Path) -> None:
    server, tls = tls_nacos
    md5_1 = server.put("t.yaml", "name: t\nv: 1\n", GROUP)
    await eventually(lambda: server.get("t.yaml", GROUP), 10, "t.yaml to be readable")
    async with watching(source(server, tmp_path / "tls", tls)) as w:
        await w.sink.until(lambda: w.sink.of("snapshot"), 20, "the snapshot over TLS")
        assert w.sink.state() == {"t": (md5_1, b"name: t\nv: 1\n")}
        md5_2 = await w.source.publish("t", b"name: t\nv: 2\n", if_revision=md5_1)
        await w.sink.until(lambda: w.sink.state().get("t", ("",))[0] == md5_2, 15,
                         "the push over TLS")

    async with watching(source(server, tmp_path / "plain", None)) as plain:
        await plain.sink.until(lambda: plain.sink.of("down"), 30, "a plaintext client to be refused")
        assert not plain.sink.of("snapshot")
