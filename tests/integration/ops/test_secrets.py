"""No configured secret appears in any log output of a secret-heavy daemon run (refused
webhooks, failing notifiers, tracing headers, a reload, the CLI). Every other ops test's log
files are checked too, by the session fixture `no_secret_in_any_ops_log` (conftest.py), after
the last of them, whatever the order."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from tests.infra.common import free_port, wait_until
from tests.integration.ops.conftest import (
    AM_TOKEN,
    OTLP_TOKEN,
    ROBOT_TOKENS,
    SECRETS,
    WEBHOOK_SECRET,
    OpsEnv,
    doc,
    notifiers,
    signed,
)


def test_no_secret_in_any_log(tmp_path: Path) -> None:
    # the HMAC key comes from the environment, as systemd's EnvironmentFile= gives it
    e = OpsEnv(tmp_path, env={"MODEL_WATCHER_WEBHOOK__SECRET": WEBHOOK_SECRET})
    outputs: list[str] = []
    try:
        del e.daemon.settings["webhook"]["secret"]
        dead = notifiers(e.rx)
        closed_port = free_port()  # nothing listens: every delivery fails, is retried, logged
        dead["slack"]["url"] = f"http://127.0.0.1:{closed_port}/x?token={ROBOT_TOKENS['slack']}"
        dead["slack"]["attempts"] = 2
        e.rx.script("/dingtalk", (401, b'{"errcode": 310000, "errmsg": "sign not match"}'))
        e.daemon.settings.update({
            "alerts": {"notifiers": dead, "rules": [
                {"name": "failed", "condition": "update_failed", "notify": list(dead)}]},
            "tracing": {"enabled": True, "endpoint": e.rx.base + "/v1/traces",
                        "schedule_delay": 0.2, "headers": {"x-api-key": OTLP_TOKEN}},
        })
        e.daemon.write_settings()
        r1 = e.write(doc())
        e.start()
        e.daemon.wait_applied("demo", r1)
        rev = e.write(doc(temperature=0.9, fail_health=True, version="v1.0.1"))
        e.daemon.wait_outcome("demo", rev, "failed")

        url = e.api + "/hooks/model-updated"
        body = json.dumps({"model": "demo", "token": WEBHOOK_SECRET}).encode()
        bad = {**signed(body), "X-Model-Watcher-Signature": WEBHOOK_SECRET}
        assert httpx.post(url, content=body, headers=bad, timeout=5).status_code == 401
        am = e.api + "/hooks/alertmanager"
        assert httpx.post(am, content=b"{}", timeout=5,
                          headers={"Authorization": f"Bearer {AM_TOKEN}x"}).status_code == 401
        e.daemon.signal(signal.SIGHUP)
        wait_until(lambda: any("reloaded" in r["event"] for r in e.daemon.log_records()), 10,
                   "the reload")
        wait_until(lambda: any("giving up" in r["event"] for r in e.daemon.log_records()), 20,
                   "the failing notifier to give up")
        for args in (("status",), ("status", "--json"), ("history", "demo")):
            res = e.daemon.cli(*args)
            outputs.append(res.stdout + res.stderr)
    finally:
        e.close()

    files = [p for p in {e.daemon.log_path, Path(e.daemon.settings["state_dir"]) /
                         "audit.jsonl"} if p.exists()]
    assert e.daemon.log_path in files and len(e.daemon.logs()) > 1000
    leaks = [(str(p), s) for p in files for s in SECRETS if s in p.read_text(errors="replace")]
    leaks += [("cli output", s) for out in outputs for s in SECRETS if s in out]
    assert not leaks, leaks
