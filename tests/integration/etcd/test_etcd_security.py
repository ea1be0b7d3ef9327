"""The etcd source with auth (user/password, token expiry and refresh) and TLS (test-made certs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.infra.etcd import EtcdCluster, Tls
from tests.integration.etcd.conftest import etcd_state
from watcher.core.errors import SourceError, SourceUnavailable
from watcher.fakes.sink import watching
from watcher.sources.etcd import EtcdSource

PREFIX = "/model-watcher/models/"


def enable_auth(cluster: EtcdCluster) -> None:
    cluster.ctl("user", "add", "root:root-pw-1")
    cluster.ctl("user", "add", "watcher:w-secret-9")
    cluster.ctl("role", "add", "models-rw")
    cluster.ctl("role", "grant-permission", "models-rw", "--prefix=true", "readwrite", PREFIX)
    cluster.ctl("user", "grant-role", "watcher", "models-rw")
    cluster.ctl("auth", "enable")
    cluster.user = ("root", "root-pw-1")


async def test_auth_user_password_with_token_expiry(tmp_path: Path,
                                                    make_source: type[EtcdSource]) -> None:
    # simple tokens live 2 s here, so the test sees them expire and be refreshed
    cluster = EtcdCluster(tmp_path, extra=["--auth-token-ttl", "2"]).start()
    try:
        enable_auth(cluster)
        rev = cluster.put(PREFIX + "alpha", "a1")
        source = make_source(endpoints=cluster.endpoints, prefix=PREFIX, username="watcher",
                             password="w-secret-9")
        async with watching(source) as w:
            await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot")
            assert w.sink.state() == {"alpha": (str(rev), b"a1")}
            await asyncio.sleep(3)  # the token has expired now
            published = await source.publish("beta", b"b1")  # re-authenticates by itself
            await w.sink.until(lambda: "beta" in w.sink.state(), 10, "beta through the watch")
            # a restart forgets every simple token: the watch must re-authenticate to resume
            cluster.members[0].kill9()
            cluster.members[0].start()
            rev_g = cluster.put(PREFIX + "gamma", "g1")
            await w.sink.until(lambda: w.sink.state().get("gamma") == (str(rev_g), b"g1"), 20,
                             "gamma after the restart")
            assert w.sink.state() == etcd_state(cluster, PREFIX)
            assert w.sink.state()["beta"][0] == published
            assert len(w.sink.snapshots) == 1
    finally:
        cluster.stop()


async def test_auth_refusals_are_clear_and_secret_free(tmp_path: Path,
                                                       make_source: type[EtcdSource]) -> None:
    cluster = EtcdCluster(tmp_path).start()
    try:
        enable_auth(cluster)
        wrong = make_source(endpoints=cluster.endpoints, prefix=PREFIX, username="watcher",
                            password="not-the-password")
        with pytest.raises(SourceError, match="authentication failed") as refused:
            await wrong.snapshot()
        assert "not-the-password" not in refused.value.reason
        assert "not-the-password" not in repr(wrong.options)
        await wrong.aclose()

        anonymous = make_source(endpoints=cluster.endpoints, prefix=PREFIX)
        with pytest.raises(SourceError, match="requires authentication"):
            await anonymous.snapshot()
        await anonymous.aclose()

        outside = make_source(endpoints=cluster.endpoints, prefix="/elsewhere/",
                              username="watcher", password="w-secret-9")
        with pytest.raises(SourceError, match="permission denied"):
            await outside.publish("x", b"y")
        await outside.aclose()
    finally:
        cluster.stop()


async def test_tls_with_client_certificate(tmp_path: Path, make_source: type[EtcdSource]) -> None:
    tls = Tls(tmp_path / "pki")
    cluster = EtcdCluster(tmp_path, tls=tls).start()
    try:
        assert cluster.endpoints[0].startswith("https://")
        rev = cluster.put(PREFIX + "alpha", "a1")
        source = make_source(endpoints=cluster.endpoints, prefix=PREFIX, ca_file=str(tls.ca),
                             cert_file=str(tls.client_cert), key_file=str(tls.client_key))
        async with watching(source) as w:
            await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot over TLS")
            assert w.sink.state() == {"alpha": (str(rev), b"a1")}
            published = await source.publish("beta", b"b1", if_revision="0")
            await w.sink.until(lambda: w.sink.state().get("beta") == (published, b"b1"), 10, "beta")

        no_cert = make_source(endpoints=cluster.endpoints, prefix=PREFIX, ca_file=str(tls.ca))
        with pytest.raises(SourceUnavailable):
            await no_cert.snapshot()
        await no_cert.aclose()

        other_ca = Tls(tmp_path / "other-pki")
        untrusted = make_source(endpoints=cluster.endpoints, prefix=PREFIX,
                                ca_file=str(other_ca.ca), cert_file=str(tls.client_cert),
                                key_file=str(tls.client_key))
        with pytest.raises(SourceUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await untrusted.snapshot()
        await untrusted.aclose()
    finally:
        cluster.stop()


async def test_tls_client_cert_with_common_name_under_auth_is_explained(
        tmp_path: Path, make_source: type[EtcdSource]) -> None:
    tls = Tls(tmp_path / "pki", client_cn="watcher")
    cluster = EtcdCluster(tmp_path, tls=tls).start()
    try:
        enable_auth(cluster)
        source = make_source(endpoints=cluster.endpoints, prefix=PREFIX, ca_file=str(tls.ca),
                             cert_file=str(tls.client_cert), key_file=str(tls.client_key),
                             username="watcher", password="w-secret-9")
        with pytest.raises(SourceError, match="without a CommonName"):
            await source.snapshot()
        await source.aclose()
    finally:
        cluster.stop()
