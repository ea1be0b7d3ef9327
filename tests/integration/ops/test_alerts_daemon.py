"""Alerts from the real daemon to a real local HTTP receiver, in every chat format: one message
for a burst of failures (cooldown + de-dup), retried when the robot fails, and a recovery."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from tests.infra.common import wait_until
from tests.integration.ops.conftest import (
    ROBOT_SECRET,
    ROBOT_TOKENS,
    WEBHOOK_SECRET,
    OpsEnv,
    doc,
    dump,
    notifiers,
)
from watcher.api.webhook import Verifier, WebhookSettings

KINDS = tuple(ROBOT_TOKENS)
BURST = 4


def _b64_hmac(key: bytes, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def test_alerts_in_each_format_with_cooldown_retry_and_recovery(tmp_path: Path) -> None:
    e = OpsEnv(tmp_path)  # the notifiers need its receiver's port: settings written below
    try:
        e.rx.script("/slack", (500, b"{}"), (503, b"{}"))                       # retried
        e.rx.script("/dingtalk", (200, b'{"errcode": 130101, "errmsg": "send too fast"}'))
        e.daemon.settings["alerts"] = {
            "notifiers": notifiers(e.rx),
            "rules": [{"name": "update-failed", "condition": "update_failed", "threshold": 1,
                       "notify": list(KINDS), "cooldown": 600}],
        }
        e.daemon.write_settings()
        r1 = e.write(doc(temperature=0.7))
        e.start()
        e.daemon.wait_applied("demo", r1)

        for i in range(BURST):  # a burst of failures: one outage
            rev = e.write(doc(temperature=0.8 + i / 100, fail_health=True, version="v1.0.1"))
            e.daemon.wait_outcome("demo", rev, "failed")
        good = e.write(doc(temperature=0.3, version="v1.1.0"))
        e.daemon.wait_applied("demo", good)

        def delivered() -> bool:
            return all(len([r for r in e.rx.at(f"/{k}") if r.body]) >= 2 for k in KINDS)

        wait_until(delivered, 20, "a firing and a recovery message at every notifier")
        bodies = {k: [r.json() for r in e.rx.at(f"/{k}")] for k in KINDS}
        # retries show up as extra requests of the same message; count distinct messages
        assert len(e.rx.at("/slack")) == 4 and len(e.rx.at("/dingtalk")) == 3, dump(bodies)
        for k in ("feishu", "wecom", "webhook"):
            assert len(bodies[k]) == 2, dump(bodies)

        slack = bodies["slack"]
        assert "*[FIRING] update-failed: demo*" in slack[0]["text"]
        assert slack[0] == slack[1]  # the retry resends the same message
        assert "[RESOLVED] update-failed: demo" in slack[-1]["text"]

        ding = e.rx.at("/dingtalk")
        assert ding[-2].json()["msgtype"] == "markdown"
        assert ding[-2].json()["markdown"]["title"] == "[FIRING] update-failed: demo"
        assert ding[-1].json()["markdown"]["title"] == "[RESOLVED] update-failed: demo"
        for req in ding:
            ts = req.query["timestamp"][0]
            assert req.query["access_token"] == [ROBOT_TOKENS["dingtalk"]]
            assert req.query["sign"] == [_b64_hmac(ROBOT_SECRET.encode(),
                                                   f"{ts}\n{ROBOT_SECRET}".encode())]

        feishu = bodies["feishu"]
        assert feishu[0]["msg_type"] == "text" and "[FIRING]" in feishu[0]["content"]["text"]
        assert feishu[0]["sign"] == _b64_hmac(f"{feishu[0]['timestamp']}\n{ROBOT_SECRET}".encode(),
                                              b"")
        assert "[RESOLVED]" in feishu[1]["content"]["text"]

        wecom = bodies["wecom"]
        assert wecom[0]["msgtype"] == "markdown"
        assert "[FIRING] update-failed: demo" in wecom[0]["markdown"]["content"]
        assert "[RESOLVED]" in wecom[1]["markdown"]["content"]

        generic = e.rx.at("/webhook")
        assert [r.json()["status"] for r in generic] == ["firing", "resolved"]
        first = generic[0].json()
        assert first["rule"] == "update-failed" and first["model"] == "demo"
        assert "health gate failed" in first["text"]
        assert "lasted" in generic[1].json()["text"]
        verifier = Verifier(WebhookSettings.model_validate({"secret": ROBOT_SECRET}))
        for req in generic:  # signed like our own webhooks, so receivers can authenticate it
            verifier.verify(req.headers, req.body)
        assert WEBHOOK_SECRET not in str(bodies)

        s = e.scrape()
        sent = {tuple(dict(labels)[k] for k in ("notifier", "status", "result")): v
                for (name, labels), v in s.items() if name == "model_watcher_alerts_sent_total"}
        for k in KINDS:
            assert sent[(k, "firing", "ok")] == 1 and sent[(k, "resolved", "ok")] == 1, sent
        retries = [r for r in e.daemon.log_records() if "failed (attempt" in r["event"]]
        assert len(retries) == 3, [r["event"] for r in retries]
    finally:
        e.close()


def test_source_down_longer_than_threshold_alerts_once_then_recovers(tmp_path: Path) -> None:
    e = OpsEnv(tmp_path)
    try:
        e.daemon.settings["alerts"] = {
            "notifiers": {"hook": {"kind": "webhook", "url": e.rx.base + "/hook"}},
            "rules": [{"name": "source-down", "condition": "source_down", "threshold": 1.5,
                       "notify": ["hook"], "cooldown": 0}],
        }
        missing = tmp_path / "not-yet"
        e.daemon.settings["source"]["path"] = str(missing)
        e.daemon.write_settings()
        e.start()  # the directory does not exist: the source is down from the start
        wait_until(lambda: e.rx.at("/hook"), 15, "the source-down alert")
        first = e.rx.at("/hook")[0].json()
        assert first["status"] == "firing" and first["subject"] == "source"
        assert "does not exist" in first["text"]
        missing.mkdir()
        (missing / "demo.yaml").write_bytes(doc())
        wait_until(lambda: len(e.rx.at("/hook")) >= 2, 15, "the recovery message")
        msgs = [r.json()["status"] for r in e.rx.at("/hook")]
        assert msgs == ["firing", "resolved"], msgs  # one outage: one message, then its end
        e.daemon.wait_applied("demo")
    finally:
        e.close()
