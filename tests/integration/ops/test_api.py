"""The daemon's loopback API for real: metrics after applied/rejected/failed revisions, the
authenticated model-updated webhook, and Alertmanager-driven rollback."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from tests.infra.common import wait_until
from tests.integration.ops.conftest import AM_TOKEN, OpsEnv, doc, dump, signed


def revisions(s: dict, outcome: str, reason: str | None = None) -> float:  # type: ignore[type-arg]
    return sum(v for (name, labels), v in s.items()
               if name == "model_watcher_revisions_total" and ("outcome", outcome) in labels
               and (reason is None or ("reason", reason) in labels))


def test_metrics_follow_applied_rejected_and_failed_revisions(ops_env: OpsEnv) -> None:
    e = ops_env
    r1 = e.write(doc(temperature=0.7))
    e.start()
    e.daemon.wait_applied("demo", r1)
    r2 = e.write(b"name: demo\nversion: [unclosed\n")
    e.daemon.wait_outcome("demo", r2, "rejected")
    r3 = e.write(doc(temperature=0.9, fail_health=True, version="v1.0.1"))
    e.daemon.wait_outcome("demo", r3, "failed")
    r4 = e.write(doc(temperature=0.5, version="v1.1.0"))
    e.daemon.wait_applied("demo", r4)

    s = e.scrape()
    assert revisions(s, "applied", "hot") == 2, dump(s)
    assert revisions(s, "rejected", "document") == 1
    assert revisions(s, "failed", "health_gate") == 1
    assert s[("model_watcher_rollbacks_total", (("by", "daemon"), ("model", "demo")))] == 1
    assert revisions(s, "seen") == 4
    info = {labels: v for (name, labels), v in s.items() if name == "model_watcher_applied_info"}
    assert info == {(("model", "demo"), ("revision", r4), ("version", "v1.1.0")): 1.0}
    assert s[("model_watcher_apply_duration_seconds_count", (("model", "demo"), ("plan", "hot")))] >= 3
    assert s[("model_watcher_applied_timestamp_seconds", (("model", "demo"),))] > time.time() - 120
    assert s[("model_watcher_source_up", ())] == 1
    assert s[("model_watcher_ready", ())] == 1

    health = httpx.get(e.api + "/healthz", timeout=5).json()
    assert health == {"status": "ok", "ready": True}
    status = httpx.get(e.api + "/status", timeout=5).json()
    assert status["models"]["demo"]["applied_revision"] == r4


def test_model_updated_webhook_triggers_a_reread(ops_env: OpsEnv) -> None:
    e = ops_env
    r1 = e.write_behind(doc(temperature=0.7))
    e.start()
    e.daemon.wait_applied("demo", r1)
    # changed behind a symlink: no file-system event, the daemon cannot know yet
    r2 = e.write_behind(doc(temperature=0.2))
    url = e.api + "/hooks/model-updated"
    body = json.dumps({"event": "model_updated", "model": {"name": "demo", "version": "v1.0.0"},
                       "registry": "mlflow"}).encode()
    refused = {
        "unsigned": (httpx.post(url, content=body, timeout=5), 401),
        "bad signature": (httpx.post(url, content=body, timeout=5, headers={
            **signed(body), "X-Model-Watcher-Signature": "sha256=" + "0" * 64}), 401),
        "old timestamp": (httpx.post(url, content=body, timeout=5,
                                     headers=signed(body, time.time() - 3600)), 401),
        "oversized": (httpx.post(url, content=b" " * 5000 + body, timeout=5,
                                 headers=signed(b" " * 5000 + body)), 413),
    }
    for what, (resp, status) in refused.items():
        assert resp.status_code == status, (what, resp.status_code, resp.text)
    nan = httpx.post(url, content=body, timeout=5, headers={
        **signed(body), "X-Model-Watcher-Timestamp": "nan"})
    assert nan.status_code == 401 and "timestamp" in nan.json()["error"], nan.text
    for i in range(3):  # made-up paths are 404 and never become metric labels
        assert httpx.post(f"{e.api}/hooks/made-up-{i}", content=b" " * 5000, timeout=5).status_code == 404
    time.sleep(1.0)
    assert e.daemon.status()["models"]["demo"]["applied_revision"] == r1, "refused = no re-read"

    headers = signed(body)
    resp = httpx.post(url, content=body, headers=headers, timeout=5)
    assert resp.status_code == 202, resp.text
    e.daemon.wait_applied("demo", r2, timeout=10)
    assert e.server.config()["spec"]["model"]["parameters"]["temperature"] == 0.2

    replay = httpx.post(url, content=body, headers=headers, timeout=5)
    assert replay.status_code == 409
    s = e.scrape()
    counts = {dict(labels)["result"]: v for (name, labels), v in s.items()
              if name == "model_watcher_webhook_requests_total"}
    assert counts == {"refused_401": 4, "refused_413": 1, "accepted": 1, "refused_409": 1}
    endpoints = {dict(labels).get("endpoint") for (name, labels), _ in s.items()
                 if name == "model_watcher_webhook_requests_total"}
    assert endpoints == {"/hooks/model-updated"}, endpoints
    refusals = [r for r in e.daemon.log_records() if "refused" in r["event"]]
    assert len(refusals) == 6, refusals


def alertmanager_payload(group: str, status: str = "firing", action: str = "rollback") -> bytes:
    labels = {"alertname": "ModelErrorRateHigh", "model": "demo", "action": action,
              "severity": "critical"}
    return json.dumps({
        "version": "4", "groupKey": group, "truncatedAlerts": 0, "status": status,
        "receiver": "model-watcher", "groupLabels": {"alertname": "ModelErrorRateHigh"},
        "commonLabels": labels, "commonAnnotations": {"summary": "5xx over 5%"},
        "externalURL": "http://alertmanager.invalid",
        "alerts": [{"status": status, "labels": labels, "annotations": {"summary": "5xx"},
                    "startsAt": "2026-11-28T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.invalid/graph", "fingerprint": "c0ffee"}],
    }).encode()


def test_alertmanager_alert_rolls_back_once_per_group(ops_env: OpsEnv) -> None:
    e = ops_env
    r1 = e.write(doc(temperature=0.7, version="v1.0.0"))
    e.start()
    e.daemon.wait_applied("demo", r1)
    r2 = e.write(doc(temperature=0.2, version="v1.1.0"))
    e.daemon.wait_applied("demo", r2)

    url = e.api + "/hooks/alertmanager"
    group = '{}/{model="demo"}:{alertname="ModelErrorRateHigh"}'
    body = alertmanager_payload(group)
    assert httpx.post(url, content=body, timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {AM_TOKEN}"}
    resp = httpx.post(url, content=body, headers=auth, timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.json()["actions"] == [{"model": "demo", "action": "rollback",
                                       "result": "requested"}]
    e.daemon.wait_applied("demo", r1, timeout=15)
    assert e.server.config()["spec"]["model"]["parameters"]["temperature"] == 0.7

    # Alertmanager re-sends the group every repeat_interval: nothing more happens
    for _ in range(2):
        again = httpx.post(url, content=body, headers=auth, timeout=5)
        assert again.json()["actions"][0]["result"] == "duplicate"
    time.sleep(1.0)

    def rollbacks() -> list[dict]:  # type: ignore[type-arg]
        return [a for a in e.daemon.audit()
                if a["action"] == "rolled_back" and a.get("by") == "alertmanager"]

    wait_until(rollbacks, 10, "the rollback's audit record")
    assert len(rollbacks()) == 1, dump(e.daemon.audit())
    requested = [a for a in e.daemon.audit() if a["action"] == "alertmanager_rollback"]
    assert len(requested) == 1 and requested[0]["group"] == group
    assert e.daemon.status()["models"]["demo"]["applied_revision"] == r1
    s = e.scrape()
    assert s[("model_watcher_actions_total", (("action", "rollback"), ("result", "requested")))] == 1


def test_alertmanager_restart_replaces_the_server_once(tmp_path: Path) -> None:
    e = OpsEnv(tmp_path, runtime=True)
    try:
        r1 = e.write(doc())
        e.start()
        e.daemon.wait_applied("demo", r1)
        pid = e.server.pid()
        body = alertmanager_payload('{}:{alertname="Hung"}', action="restart")
        auth = {"Authorization": f"Bearer {AM_TOKEN}"}
        resp = httpx.post(e.api + "/hooks/alertmanager", content=body, headers=auth, timeout=5)
        assert resp.json()["actions"] == [{"model": "demo", "action": "restart", "result": "requested"}]
        wait_until(lambda: [a for a in e.daemon.audit() if a["action"] == "restarted"], 20, "the restart")
        assert e.server.pid() != pid
        assert e.server.config()["spec"]["model"]["parameters"]["temperature"] == 0.7
        again = httpx.post(e.api + "/hooks/alertmanager", content=body, headers=auth, timeout=5)
        assert again.json()["actions"][0]["result"] == "duplicate"
        assert e.daemon.status()["models"]["demo"]["applied_revision"] == r1
    finally:
        e.close()


def test_the_daemon_stops_cleanly_with_requests_in_flight(ops_env: OpsEnv) -> None:
    """SIGTERM while one client sends a body slowly and another sent nothing at all: the
    daemon exits 0 within the API's shutdown grace, with no error or traceback logged."""
    e = ops_env
    e.write(doc())
    e.start()
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as slow, \
            socket.create_connection(("127.0.0.1", e.port), timeout=5):
        slow.sendall(b"POST /hooks/model-updated HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        time.sleep(0.3)
        t0 = time.monotonic()
        assert e.daemon.stop() == 0
        took = time.monotonic() - t0
        assert slow.recv(4096).startswith(b"HTTP/1.1 503")
    assert took < 10, took
    bad = [r for r in e.daemon.log_records() if r["level"] in ("ERROR", "CRITICAL")]
    assert not bad, bad
    assert "Traceback" not in e.daemon.logs() and "never retrieved" not in e.daemon.logs()
