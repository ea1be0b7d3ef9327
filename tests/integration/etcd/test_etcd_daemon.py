"""The real daemon (subprocess) on etcd, against the real example model server.

publish -> applied with the revision in status and history; stopped daemon + three publishes
-> only the last applied, once; bad documents put straight into etcd -> rejected; a stale
`publish --if-revision` -> exit 1 with a clear message; etcd down -> status says so, the last
good state keeps serving, one WARNING, and the daemon catches up when etcd returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.common import wait_until
from tests.infra.etcd import EtcdCluster, TcpProxy, Tls
from tests.infra.served import ServedDaemon, doc
from tests.integration.etcd.conftest import etcd_state


class EtcdEnv(ServedDaemon):
    """An etcd (shared or private), the example server, and a daemon watching a prefix."""

    def __init__(self, tmp: Path, etcd: EtcdCluster, prefix: str,
                 endpoints: list[str] | None = None) -> None:
        self.etcd = etcd
        self.prefix = prefix
        super().__init__(tmp, {"kind": "etcd", "endpoints": endpoints or etcd.endpoints, "prefix": prefix,
                               "timeout": 2.0, "max_backoff": 1.0, "check_interval": 1.0})

    def publish_ok(self, content: bytes, name: str = "demo") -> str:
        result = self.publish(content, name=name)
        assert result.returncode == 0, result.stderr
        revision = result.stdout.strip()
        assert revision.isdigit(), result.stdout
        return revision


@pytest.fixture
def env(tmp_path: Path, etcd: EtcdCluster, prefix: str) -> Iterator[EtcdEnv]:
    e = EtcdEnv(tmp_path, etcd, prefix)
    try:
        yield e
    finally:
        e.close()


def test_publish_is_applied_with_its_revision_in_status_and_history(env: EtcdEnv) -> None:
    env.daemon.start()
    r1 = env.publish_ok(doc(temperature=0.7))
    status = env.daemon.wait_applied("demo", r1)
    assert status["applied_version"] == "v1.0.0"
    assert env.daemon.wait_outcome("demo", r1, "applied")["revision"] == r1
    assert env.served()["model"]["parameters"]["temperature"] == 0.7
    r2 = env.publish_ok(doc(temperature=0.2, version="v1.0.1"))
    assert int(r2) > int(r1)
    env.daemon.wait_applied("demo", r2)
    assert env.served()["model"]["parameters"]["temperature"] == 0.2
    daemon = env.daemon.status()["daemon"]
    assert daemon["source_kind"] == "etcd" and daemon["source_up"] is True


def test_three_publishes_while_stopped_apply_the_last_once(env: EtcdEnv) -> None:
    env.daemon.start()
    r1 = env.publish_ok(doc(version="v1.0.0"))
    env.daemon.wait_applied("demo", r1)
    env.daemon.stop()
    later = [env.publish_ok(doc(version=f"v1.0.{i}", temperature=0.1 * i)) for i in (1, 2, 3)]
    env.daemon.start()
    env.daemon.wait_applied("demo", later[-1])
    env.daemon.wait_outcome("demo", later[-1], "applied")
    applied = [row["revision"] for row in env.daemon.history("demo") if row["outcome"] == "applied"]
    assert applied.count(later[-1]) == 1
    assert not set(later[:-1]) & set(applied), "only the last of the three may be applied"
    assert env.served()["version"] == "v1.0.3"
    # and a restart with nothing new applies nothing again
    env.daemon.stop()
    env.daemon.start()
    wait_until(lambda: env.daemon.status()["daemon"].get("source_up"), 10, "source up")
    assert env.daemon.count("demo", later[-1]) == 1


def test_bad_documents_written_straight_into_etcd_are_rejected(env: EtcdEnv) -> None:
    env.daemon.start()
    good = env.publish_ok(doc())
    env.daemon.wait_applied("demo", good)
    key = env.prefix + "demo"
    bad = {
        "not yaml": b"name: demo\nversion: [unclosed\n",
        "bad semver": doc(version="banana"),
        "unknown field": doc(version="v1.0.1", surprise=True),
        "other name": doc(version="v1.0.1", name="someone-else"),
    }
    for label, content in bad.items():
        revision = str(env.etcd.put(key, content))
        row = env.daemon.wait_outcome("demo", revision, "rejected")
        assert row["reason"], label
    status = env.daemon.status()["models"]["demo"]
    assert status["applied_revision"] == good and status["last_outcome"] == "rejected"
    assert env.served()["version"] == "v1.0.0", "a rejected document must not touch the server"


def test_stale_if_revision_is_refused_with_exit_status_1(env: EtcdEnv) -> None:
    r1 = env.publish_ok(doc(version="v1.0.0"))
    ok = env.publish(doc(version="v1.0.1"), "--if-revision", r1)
    assert ok.returncode == 0, ok.stderr
    r2 = ok.stdout.strip()
    stale = env.publish(doc(version="v1.0.2"), "--if-revision", r1)
    assert stale.returncode == 1
    assert f"is at revision {r2}" in stale.stderr and f"expected revision {r1}" in stale.stderr
    assert "Traceback" not in stale.stderr
    assert etcd_state(env.etcd, env.prefix)["demo"][0] == r2
    # a document the daemon would reject is never written
    invalid = env.publish(doc(version="not-semver"), "--if-revision", r2)
    assert invalid.returncode == 1 and "not published" in invalid.stderr
    assert etcd_state(env.etcd, env.prefix)["demo"][0] == r2


def test_etcd_outage_keeps_serving_and_catches_up(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd").start()
    env = EtcdEnv(tmp_path, cluster, "/model-watcher/models/")
    try:
        env.daemon.start()
        r1 = env.publish_ok(doc(version="v1.0.0"))
        env.daemon.wait_applied("demo", r1)
        r2 = env.publish_ok(doc(version="v1.0.1", temperature=0.3))  # just before the kill
        cluster.members[0].kill9()
        wait_until(lambda: env.daemon.status()["daemon"].get("source_up") is False, 15,
                   "status to show the source down")
        assert "etcd unreachable" in env.daemon.status()["daemon"]["source_detail"]
        assert env.server.config()["spec"] is not None  # the last good state keeps serving
        wait_until(lambda: sum("still unreachable" in r.get("event", "")
                               for r in env.daemon.log_records()) >= 2, 15, "several retries")
        cluster.members[0].start()
        r3 = env.publish_ok(doc(version="v1.0.2", temperature=0.4))
        env.daemon.wait_applied("demo", r3, timeout=30)
        assert env.served()["model"]["parameters"]["temperature"] == 0.4
        assert env.daemon.status()["daemon"]["source_up"] is True
        assert env.daemon.count("demo", r3, "applied") == 1
        assert env.daemon.count("demo", r2, "applied") <= 1
        records = env.daemon.log_records()
        warnings = [r for r in records if r.get("level") in ("WARNING", "warning")
                    and "unreachable" in json.dumps(r)]
        assert len(warnings) == 1, warnings
    finally:
        env.close()
        cluster.stop()


def test_compaction_while_the_daemon_was_cut_off(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd").start()
    proxy = TcpProxy(cluster.members[0].client_port)
    env = EtcdEnv(tmp_path, cluster, "/model-watcher/models/", endpoints=[proxy.url])
    key = env.prefix + "demo"
    try:
        env.daemon.start()
        r1 = str(cluster.put(key, doc(version="v1.0.0")))
        env.daemon.wait_applied("demo", r1)
        proxy.cut()
        wait_until(lambda: env.daemon.status()["daemon"].get("source_up") is False, 15,
                   "status to show the source down")
        skipped = str(cluster.put(key, doc(version="v1.0.1", temperature=0.1)))
        last = str(cluster.put(key, doc(version="v1.0.2", temperature=0.2)))
        cluster.compact()
        proxy.restore()
        env.daemon.wait_applied("demo", last, timeout=30)
        assert env.served()["model"]["parameters"]["temperature"] == 0.2
        assert env.daemon.count("demo", skipped) == 0, "only the final state is applied"
        assert any("compacted" in r.get("event", "") for r in env.daemon.log_records())
    finally:
        env.close()
        proxy.close()
        cluster.stop()


def test_cluster_leader_killed_during_publishes(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", size=3).start()
    leader = cluster.leader()
    ordered = [leader.url] + [m.url for m in cluster.members if m is not leader]
    env = EtcdEnv(tmp_path, cluster, "/model-watcher/models/", endpoints=ordered)
    key = env.prefix + "demo"
    try:
        env.daemon.start()
        revisions: list[str] = []
        for i in range(12):
            if i == 5:
                leader.kill9()
            content = doc(version=f"v1.0.{i}", temperature=round(0.05 * i, 2))
            revision = wait_until(lambda c=content: _try_put(cluster, key, c), 20,
                                  f"publish {i} to go through")
            revisions.append(str(revision))
            time.sleep(0.2)
        env.daemon.wait_applied("demo", revisions[-1], timeout=40)
        assert env.served()["version"] == "v1.0.11"
        applied = [r["revision"] for r in env.daemon.history("demo") if r["outcome"] == "applied"]
        assert len(applied) == len(set(applied)), f"a revision applied twice: {applied}"
        assert env.daemon.status()["daemon"]["source_up"] is True
    finally:
        env.close()
        cluster.stop()


def _try_put(cluster: EtcdCluster, key: str, content: bytes) -> int | None:
    try:
        return cluster.put(key, content)
    except RuntimeError:  # refused during the election: the caller retries
        return None


def test_daemon_over_tls_with_auth_keeps_the_password_secret(tmp_path: Path) -> None:
    tls = Tls(tmp_path / "pki")
    cluster = EtcdCluster(tmp_path / "etcd", tls=tls).start()
    prefix = "/model-watcher/models/"
    password = "s3cret-etcd-pw-7781"
    cluster.ctl("user", "add", "root:root-pw-1")
    cluster.ctl("user", "add", f"watcher:{password}")
    cluster.ctl("role", "add", "models-rw")
    cluster.ctl("role", "grant-permission", "models-rw", "--prefix=true", "readwrite", prefix)
    cluster.ctl("user", "grant-role", "watcher", "models-rw")
    cluster.ctl("auth", "enable")
    cluster.user = ("root", "root-pw-1")
    env = EtcdEnv(tmp_path, cluster, prefix)
    env.daemon.settings["source"].update(
        username="watcher", ca_file=str(tls.ca), cert_file=str(tls.client_cert),
        key_file=str(tls.client_key))
    env.daemon.write_settings()
    env.daemon.env["MODEL_WATCHER_SOURCE__PASSWORD"] = password  # kept out of the file
    try:
        env.daemon.start()
        r1 = env.publish_ok(doc(version="v1.0.0"))
        env.daemon.wait_applied("demo", r1)
        r2 = str(cluster.put(prefix + "demo", doc(version="v1.0.1", temperature=0.4)))
        env.daemon.wait_applied("demo", r2)
        assert env.served()["model"]["parameters"]["temperature"] == 0.4
        status = env.daemon.cli("status", "--json", check=True).stdout
        assert password not in status and password not in env.daemon.config.read_text()
        assert password not in env.daemon.logs()
    finally:
        env.close()
        cluster.stop()
