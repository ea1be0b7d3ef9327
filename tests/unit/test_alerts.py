"""Alert rules (cooldown, de-dup, recovery), chat payload formats, background delivery."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.infra.receiver import Receiver
from watcher import alerts
from watcher.alerts.formats import NotifierSettings, check_answer, render
from watcher.alerts.rules import Engine, Notification, Rule
from watcher.api.webhook import Verifier, WebhookSettings
from watcher.core.errors import SettingsError
from watcher.core.events import Event, Kind
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.fakes.context import feature_context

ROBOT_SECRET = "SECunit-robot-secret-0123456789"


def rule(condition: str, **kw: object) -> Rule:
    return Rule.model_validate({"name": condition, "condition": condition, "notify": ["n"], **kw})


def fail(model: str = "m", rev: str = "1") -> Event:
    return Outcome(Verdict.FAILED, model, rev, "health gate failed")


def test_burst_is_one_message_then_recovery() -> None:
    e = Engine([rule("update_failed", cooldown=600)])
    out = [n for i in range(20) for n in e.on_message(fail(rev=str(i)), 100.0 + i)]
    assert [(n.status, n.count) for n in out] == [("firing", 1)]
    assert "health gate failed" in out[0].text
    rec = e.on_message(Outcome(Verdict.APPLIED, "m", "21"), 200.0)
    assert [(n.status, n.title) for n in rec] == [("resolved", "[RESOLVED] update_failed: m")]
    assert "lasted 1m40s" in rec[0].text
    # flapping inside the cooldown: suppressed, and no recovery for a suppressed incident
    assert e.on_message(fail(), 210.0) == []
    assert e.on_message(Outcome(Verdict.APPLIED, "m", "r"), 220.0) == []
    assert e.suppressed == 1
    # an incident still triggering after the cooldown is sent then
    assert e.on_message(fail(), 300.0) == []
    assert [n.status for n in e.on_message(fail(), 801.0)] == ["firing"]
    # other models are other incidents
    assert [n.subject for n in e.on_message(fail("other"), 802.0)] == ["other"]


def test_threshold_filters_and_conditions() -> None:
    e = Engine([rule("update_failed", threshold=3, cooldown=0, models=["a"]),
                rule("rollback", cooldown=0), rule("health_failing", threshold=2, cooldown=0),
                rule("update_rejected", cooldown=0, recovery=False)])
    assert e.on_message(fail("a"), 1) == [] and e.on_message(fail("a"), 2) == []
    assert [n.rule for n in e.on_message(fail("a"), 3)] == ["update_failed"]
    assert e.on_message(fail("b"), 4) == []  # not a model of this rule
    assert [n.rule for n in e.on_message(Outcome(Verdict.APPLIED, "a", "r", action=Action.ROLLBACK), 5)] == ["rollback"]
    bad = Event(Kind.HEALTH, model="a", ok=False)
    assert e.on_message(bad, 6) == []
    assert [n.rule for n in e.on_message(bad, 7)] == ["health_failing"]
    resolved = e.on_message(Event(Kind.HEALTH, model="a", ok=True), 8)
    assert [(n.rule, n.status) for n in resolved] == [("health_failing", "resolved")]
    assert [n.rule for n in e.on_message(Outcome(Verdict.REJECTED, "a", "r"), 9)] == ["update_rejected"]
    after = e.on_message(Outcome(Verdict.APPLIED, "a", "r"), 10)
    assert sorted((n.rule, n.status) for n in after) == [
        ("rollback", "resolved"), ("update_failed", "resolved")]  # rejected: recovery off


def test_source_down_after_threshold_seconds() -> None:
    e = Engine([rule("source_down", threshold=30, cooldown=0)])
    assert e.on_message(Event(Kind.SOURCE_DOWN, reason="connection refused"), 100) == []
    assert e.tick(120) == []
    assert e.on_message(Event(Kind.SOURCE_DOWN), 125) == []  # repeated edge: same outage
    fired = e.tick(131)
    assert [n.status for n in fired] == ["firing"] and "connection refused" in fired[0].text
    assert e.tick(200) == []
    assert [n.status for n in e.on_message(Event(Kind.SOURCE_UP), 250)] == ["resolved"]
    # a short blip never fires and sends no recovery
    e.on_message(Event(Kind.SOURCE_DOWN), 300)
    assert e.on_message(Event(Kind.SOURCE_UP), 310) == []
    assert e.tick(400) == []


def note(status: str = "firing") -> Notification:
    return Notification("update-failed", "update_failed", status, "qwen-chat", "qwen-chat",  # type: ignore[arg-type]
                        "[FIRING] update-failed: qwen-chat", "rev 42 failed", 1, 1.0, 2.0, ("n",))


def settings(kind: str, url: str = "http://127.0.0.1:9/x?access_token=T", **kw: object) -> NotifierSettings:
    return NotifierSettings.model_validate({"kind": kind, "url": url, **kw})


def test_formats() -> None:
    now = 1764338400.5
    _, _, body = render(note(), settings("slack"), now)
    assert b'"text":"\\ud83d\\udea8' not in body and "*[FIRING]" in body.decode()
    url, _, body = render(note(), settings("dingtalk", secret=ROBOT_SECRET), now)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q["access_token"] == ["T"] and q["timestamp"] == ["1764338400500"]
    expect = base64.b64encode(hmac.new(ROBOT_SECRET.encode(),
                                       f"1764338400500\n{ROBOT_SECRET}".encode(),
                                       hashlib.sha256).digest()).decode()
    assert q["sign"] == [expect]
    import json
    d = json.loads(body)
    assert d["msgtype"] == "markdown" and d["markdown"]["title"].startswith("[FIRING]")
    _, _, body = render(note(), settings("feishu", secret=ROBOT_SECRET), now)
    f = json.loads(body)
    assert f["msg_type"] == "text" and f["timestamp"] == "1764338400"
    key = f"1764338400\n{ROBOT_SECRET}".encode()
    assert f["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    _, _, body = render(note("resolved"), settings("wecom"), now)
    w = json.loads(body)
    assert w["msgtype"] == "markdown" and 'color="info"' in w["markdown"]["content"]
    url, headers, body = render(note(), settings("webhook", secret="generic-secret-0123456789"),
                                time.time())
    g = json.loads(body)
    assert g["status"] == "firing" and g["model"] == "qwen-chat" and g["source"] == "model-watcher"
    v = Verifier(WebhookSettings.parse({"secret": "generic-secret-0123456789"}))
    v.verify({k.lower(): val for k, val in headers.items()}, body)


def test_check_answer() -> None:
    assert check_answer("slack", 200, "ok") is None
    assert check_answer("slack", 500, "") == "HTTP 500"
    assert check_answer("dingtalk", 200, '{"errcode":0,"errmsg":"ok"}') is None
    assert check_answer("dingtalk", 200, '{"errcode":310000,"errmsg":"sign not match"}') == \
        "robot answered error 310000: sign not match"
    assert check_answer("feishu", 200, '{"code":19021,"msg":"sign match fail"}') is not None
    assert check_answer("feishu", 200, '{"StatusCode":0}') is None
    assert check_answer("wecom", 200, "<html>") == "answer is not JSON"


def test_settings() -> None:
    with pytest.raises(SettingsError, match="unknown notifiers"):
        alerts.AlertSettings.parse({"rules": [{"name": "r", "condition": "rollback",
                                               "notify": ["x"]}]})
    with pytest.raises(SettingsError, match="MISSING_VAR"):
        alerts.AlertSettings.parse({"notifiers": {"x": {"kind": "slack",
                                                        "url_env": "MISSING_VAR"}}}, env={})
    with pytest.raises(SettingsError, match="condition"):
        alerts.AlertSettings.parse({"notifiers": {"x": {"kind": "slack", "url": "u"}},
                                    "rules": [{"name": "r", "condition": "moon", "notify": ["x"]}]})
    s = alerts.AlertSettings.parse({"notifiers": {"x": {"kind": "slack", "url_env": "U"}}},
                                   env={"U": "http://secret-url"})
    assert "secret-url" not in repr(s)


async def test_delivery_retries_and_never_blocks(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.script("/ding", (500, b"{}"), (200, b'{"errcode":310000,"errmsg":"busy"}'))
        daemon = feature_context(tmp_path, alerts={
            "notifiers": {
                "ding": {"kind": "dingtalk", "url": rx.base + "/ding?access_token=T",
                         "secret": ROBOT_SECRET, "backoff": 0.05},
                "dead": {"kind": "slack", "url": "http://127.0.0.1:9/nothing-listens",
                         "attempts": 2, "backoff": 0.05},
            },
            "rules": [{"name": "update-failed", "condition": "update_failed",
                       "notify": ["ding", "dead"], "cooldown": 60}],
        })
        bus = daemon.bus
        task = asyncio.create_task(alerts.serve(daemon))
        await asyncio.sleep(0.05)
        for i in range(50):  # enqueue only: emitting never waits for a delivery
            bus.emit(fail(rev=str(i)))
        assert rx.at("/ding") == []
        deadline = time.monotonic() + 5
        while len(rx.at("/ding")) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(rx.at("/ding")) == 3  # 500, error code, then delivered
        bus.emit(Outcome(Verdict.APPLIED, "m", "99"))
        while len(rx.at("/ding")) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        bodies = [r.json()["markdown"]["title"] for r in rx.at("/ding")]
        assert bodies == ["[FIRING] update-failed: m"] * 3 + ["[RESOLVED] update-failed: m"]
        text = daemon.metrics.render().decode()
        assert 'notifier="ding",result="ok",rule="update-failed",status="firing"} 1.0' in text
        assert 'notifier="dead",result="failed",rule="update-failed",status="firing"} 1.0' in text
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_no_rules_returns(tmp_path: Path) -> None:
    await asyncio.wait_for(alerts.serve(feature_context(tmp_path)), 1)
