"""The real daemon (subprocess) on the real Nacos, against the real example model server.

publish -> applied with the md5 in status and history; stopped daemon + three publishes ->
only the last applied, once; bad documents put straight into Nacos -> rejected, a deleted
config -> recorded as a delete, never applied; a stale `publish --if-md5` -> exit 1; refused
credentials -> one clear error; Nacos stopped while the daemon runs, and Nacos down when the
daemon starts -> the last good state keeps serving, status says so, convergence on return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.common import wait_until
from tests.infra.nacos_server import NacosServer
from tests.infra.served import ServedDaemon, doc


def md5(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


class NacosEnv(ServedDaemon):
    """The shared Nacos, the example server, and a daemon watching one group."""

    def __init__(self, tmp: Path, nacos: NacosServer, group: str, **source: Any) -> None:
        self.nacos = nacos
        self.group = group
        super().__init__(tmp, {"kind": "nacos", "server_addresses": [nacos.address], "group": group,
                               "username": nacos.username, "password": nacos.password,
                               "timeout": 3.0, "max_backoff": 1.0, "check_interval": 0.5, **source})

    def publish_ok(self, content: bytes, name: str = "demo") -> str:
        result = self.publish(content, name=name)
        assert result.returncode == 0, result.stderr
        revision = str(result.stdout.strip())
        assert revision == md5(content), result.stdout
        return revision


@pytest.fixture
def env(tmp_path: Path, nacos: NacosServer, group: str) -> Iterator[NacosEnv]:
    e = NacosEnv(tmp_path, nacos, group)
    try:
        yield e
    finally:
        e.close()


def test_publish_is_applied_with_its_md5_in_status_and_history(env: NacosEnv) -> None:
    env.daemon.start()
    r1 = env.publish_ok(doc(temperature=0.7))
    status = env.daemon.wait_applied("demo", r1)
    assert status["applied_version"] == "v1.0.0"
    assert env.daemon.wait_outcome("demo", r1, "applied")["revision"] == r1
    assert env.nacos.get("demo.yaml", env.group) == (doc(temperature=0.7).decode(), r1)
    assert env.served()["model"]["parameters"]["temperature"] == 0.7
    r2 = env.publish_ok(doc(temperature=0.2, version="v1.0.1"))
    env.daemon.wait_applied("demo", r2)
    assert env.served()["model"]["parameters"]["temperature"] == 0.2
    assert [r["revision"] for r in env.daemon.history("demo") if r["outcome"] == "applied"] \
        == [r2, r1]
    daemon = env.daemon.status()["daemon"]
    assert daemon["source_kind"] == "nacos" and daemon["source_up"] is True


def test_three_publishes_while_stopped_apply_the_last_once(env: NacosEnv) -> None:
    env.daemon.start()
    r1 = env.publish_ok(doc(version="v1.0.0"))
    env.daemon.wait_applied("demo", r1)
    env.daemon.stop()
    later = [env.publish_ok(doc(version=f"v1.0.{i}", temperature=0.1 * i)) for i in (1, 2, 3)]
    env.daemon.start()
    env.daemon.wait_applied("demo", later[-1])
    env.daemon.wait_outcome("demo", later[-1], "applied")
    assert env.daemon.count("demo", later[-1], "applied") == 1
    assert all(env.daemon.count("demo", r) == 0 for r in later[:-1])
    assert env.served()["version"] == "v1.0.3"
    env.daemon.stop()  # a restart with nothing new applies nothing again
    env.daemon.start()
    wait_until(lambda: env.daemon.status()["daemon"].get("source_up"), 15, "source up")
    assert env.daemon.count("demo", later[-1]) == 1


def test_bad_documents_put_straight_into_nacos_are_rejected(env: NacosEnv) -> None:
    env.daemon.start()
    good = env.publish_ok(doc())
    env.daemon.wait_applied("demo", good)
    bad = {
        "not yaml": b"name: demo\nversion: [unclosed\n",
        "bad semver": doc(version="banana"),
        "unknown field": doc(version="v1.0.1", surprise=True),
        "other name": doc(version="v1.0.1", name="someone-else"),
    }
    for label, content in bad.items():
        revision = env.nacos.put("demo.yaml", content, env.group)
        assert revision == md5(content)
        row = env.daemon.wait_outcome("demo", revision, "rejected")
        assert row["reason"], label
    status = env.daemon.status()["models"]["demo"]
    assert status["applied_revision"] == good and status["last_outcome"] == "rejected"
    assert env.served()["version"] == "v1.0.0", "a rejected document must not touch the server"

    env.nacos.delete("demo.yaml", env.group)  # a delete is a delete, never an empty spec
    env.daemon.wait_outcome("demo", "deleted", "deleted")
    assert env.daemon.count("demo", md5(b""), "applied") == 0
    assert env.served()["version"] == "v1.0.0"


def test_stale_if_md5_is_refused_with_exit_status_1(env: NacosEnv) -> None:
    r1 = env.publish_ok(doc(version="v1.0.0"))
    ok = env.publish(doc(version="v1.0.1"), "--if-md5", r1)
    assert ok.returncode == 0, ok.stderr
    r2 = ok.stdout.strip()
    stale = env.publish(doc(version="v1.0.2"), "--if-md5", r1)
    assert stale.returncode == 1, stale.stderr
    assert f"is at md5 {r2}" in stale.stderr and f"expected {r1}" in stale.stderr
    assert "Traceback" not in stale.stderr
    assert env.nacos.get("demo.yaml", env.group) == (doc(version="v1.0.1").decode(), r2)
    invalid = env.publish(doc(version="not-semver"), "--if-md5", r2)  # never written
    assert invalid.returncode == 1 and "not published" in invalid.stderr
    assert env.nacos.get("demo.yaml", env.group)[1] == r2  # type: ignore[index]


def test_refused_credentials_give_one_clear_error(tmp_path: Path, nacos: NacosServer,
                                                  group: str) -> None:
    wrong = "wrong-" + nacos.password
    env = NacosEnv(tmp_path, nacos, group, password=wrong)
    try:
        env.daemon.start()
        wait_until(lambda: env.daemon.status()["daemon"].get("source_up") is False, 20,
                   "status to show the source down")
        detail = env.daemon.status()["daemon"]["source_detail"]
        assert "refused the credentials of user 'nacos'" in detail
        published = env.publish(doc())
        assert published.returncode == 1 and "refused the credentials" in published.stderr
        assert "Traceback" not in published.stderr
        env.daemon.stop()
        records = env.daemon.log_records()
        refusals = [r for r in records if r.get("level") in ("ERROR", "error")
                    and "refused the credentials" in json.dumps(r)]
        assert len(refusals) == 1, refusals
        assert wrong not in env.daemon.logs() and nacos.password not in env.daemon.logs()
    finally:
        env.close()


def test_nacos_stopped_while_running_then_a_change_after_its_return_is_applied(
        env: NacosEnv) -> None:
    env.daemon.start()
    r1 = env.publish_ok(doc(version="v1.0.0"))
    env.daemon.wait_applied("demo", r1)
    env.nacos.stop()
    try:
        wait_until(lambda: env.daemon.status()["daemon"].get("source_up") is False, 20,
                   "status to show the source down")
        assert "unreachable" in env.daemon.status()["daemon"]["source_detail"]
        assert env.served()["version"] == "v1.0.0"  # the last good state keeps serving
    finally:
        env.nacos.start()
    r2 = env.publish_ok(doc(version="v1.0.1", temperature=0.4))
    env.daemon.wait_applied("demo", r2, timeout=30)
    assert env.served()["model"]["parameters"]["temperature"] == 0.4
    wait_until(lambda: env.daemon.status()["daemon"]["source_up"] is True, 10, "source up")
    assert env.daemon.count("demo", r2, "applied") == 1
    records = env.daemon.log_records()
    warnings = [r for r in records if r.get("level") in ("WARNING", "warning")
                and "unreachable" in json.dumps(r)]
    assert len(warnings) == 1, warnings
    errors = [r for r in records if r.get("level") in ("ERROR", "error")]
    assert errors == [], "an outage is one WARNING, not a stream of SDK errors"


def test_nacos_down_when_the_daemon_starts_keeps_the_last_good_and_converges(
        env: NacosEnv) -> None:
    env.daemon.start()
    r1 = env.publish_ok(doc(version="v1.0.0"))
    env.daemon.wait_applied("demo", r1)
    env.daemon.stop()
    env.nacos.stop()
    try:
        env.daemon.start()
        wait_until(lambda: env.daemon.status()["daemon"].get("source_up") is False, 20,
                   "status to show the source down")
        status = env.daemon.status()
        assert "unreachable" in status["daemon"]["source_detail"]
        assert status["models"]["demo"]["applied_revision"] == r1
        assert env.served()["version"] == "v1.0.0"
    finally:
        env.nacos.start()
    wait_until(lambda: env.daemon.status()["daemon"]["source_up"] is True, 30, "source up")
    r2 = env.publish_ok(doc(version="v1.0.1", temperature=0.5))
    env.daemon.wait_applied("demo", r2, timeout=30)
    assert env.served()["model"]["parameters"]["temperature"] == 0.5
    assert env.daemon.count("demo", r1, "applied") == 1
