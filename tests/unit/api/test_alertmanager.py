"""Alertmanager webhook -> one action per alert group, audited, persisted across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watcher.api.alertmanager import AlertmanagerHook
from watcher.api.webhook import Refused, Verifier, WebhookSettings, signed_headers
from watcher.fakes.context import feature_context, operator_of
from watcher.fakes.operator import RecordingOperator
from watcher.features import FeatureContext

SECRET = "unit-alertmanager-secret-0123"
TOKEN = "am-bearer-token-0123456789"


def audit_lines(ctx: FeatureContext) -> list[dict[str, Any]]:
    ctx.audit.flush()
    path = ctx.settings.state_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def calls(ctx: FeatureContext) -> list[tuple[str, str | None]]:
    return [(action, model) for action, model, _, _ in operator_of(ctx).calls]


def make(tmp_path: Path, **am: Any) -> tuple[AlertmanagerHook, FeatureContext]:
    settings = WebhookSettings.parse({"secret": SECRET, "alertmanager": am})
    ctx = feature_context(tmp_path, operator=RecordingOperator(refuse={"no-history": "no earlier stable revision"}))
    return AlertmanagerHook(ctx, Verifier(settings), settings.alertmanager), ctx


def payload(group: str, status: str = "firing", **labels: str) -> bytes:
    return json.dumps({
        "version": "4", "groupKey": group, "status": status, "receiver": "model-watcher",
        "groupLabels": {"alertname": labels.get("alertname", "X")},
        "alerts": [{"status": status, "labels": labels, "annotations": {},
                    "startsAt": "2026-11-28T12:00:00Z", "fingerprint": "abc"}],
    }).encode()


def signed(body: bytes) -> dict[str, str]:
    s = WebhookSettings.parse({"secret": SECRET})
    return {k.lower(): v for k, v in signed_headers(s, body).items()}


async def test_once_per_group(tmp_path: Path) -> None:
    hook, daemon = make(tmp_path)
    body = payload("{}:{alertname=\"HighErrorRate\"}", alertname="HighErrorRate",
                   model="qwen-chat", action="rollback")
    status, reply = await hook.handle(signed(body), body, "test")
    assert status == 200 and reply["actions"] == [
        {"model": "qwen-chat", "action": "rollback", "result": "requested"}]
    # Alertmanager's repeat_interval re-send (new timestamp, same group): nothing more
    body2 = body.replace(b'"abc"', b'"abc" ')
    status, reply = await hook.handle(signed(body2), body2, "test")
    assert reply["actions"][0]["result"] == "duplicate"
    assert calls(daemon) == [("rollback", "qwen-chat")]
    assert [line["action"] for line in audit_lines(daemon)] == ["alertmanager_rollback"]
    assert audit_lines(daemon)[0]["by"] == "alertmanager"
    # a restarted daemon remembers the group
    hook2, daemon2 = make(tmp_path)
    body3 = body + b" "
    await hook2.handle(signed(body3), body3, "test")
    assert calls(daemon2) == []
    # resolved forgets it: the next outage acts again
    resolved = payload("{}:{alertname=\"HighErrorRate\"}", "resolved", model="qwen-chat",
                       action="rollback")
    assert (await hook2.handle(signed(resolved), resolved, "t"))[1]["status"] == "resolved"
    body4 = body + b"\n\n"
    await hook2.handle(signed(body4), body4, "test")
    assert calls(daemon2) == [("rollback", "qwen-chat")]


async def test_selection_and_failures(tmp_path: Path) -> None:
    hook, daemon = make(tmp_path, alertname_actions={"Stale": "resync"}, actions=["rollback",
                                                                                   "resync"])
    for labels in ({"alertname": "A"},                                  # no model
                   {"alertname": "A", "model": "m"},                    # no action
                   {"alertname": "A", "model": "m", "action": "restart"},  # not allowed here
                   {"alertname": "A", "model": "m", "action": "format-disk"}):
        body = payload("g-" + json.dumps(labels), **labels)
        assert (await hook.handle(signed(body), body, "t"))[1]["actions"] == []
    body = payload("g2", alertname="Stale", model="m")
    assert (await hook.handle(signed(body), body, "t"))[1]["actions"][0]["action"] == "resync"
    body = payload("g3", alertname="A", model="no-history", action="rollback")
    result = (await hook.handle(signed(body), body, "t"))[1]["actions"][0]["result"]
    assert result == "failed: no earlier stable revision"
    assert calls(daemon) == [("resync", "m")]
    hook3, ctx3 = make(tmp_path)
    body = payload("g4", alertname="A", model="m", action="restart")
    result = (await hook3.handle(signed(body), body, "t"))[1]["actions"][0]["result"]
    assert result == "requested" and calls(ctx3) == [("restart", "m")]


async def test_auth(tmp_path: Path) -> None:
    hook, daemon = make(tmp_path, bearer_token=TOKEN)
    body = payload("g", alertname="A", model="m", action="rollback")
    with pytest.raises(Refused) as e:
        await hook.handle({}, body, "t")
    assert e.value.status == 401
    with pytest.raises(Refused) as e:
        await hook.handle({"authorization": "Bearer wrong"}, body, "t")
    assert e.value.status == 401
    with pytest.raises(Refused) as e:
        await hook.handle(signed(b"{}"), b"{}", "t")
    assert e.value.status == 400
    await hook.handle({"authorization": f"Bearer {TOKEN}"}, body, "t")
    assert calls(daemon) == [("rollback", "m")]
    hook_off, _ = make(tmp_path, enabled=False)
    with pytest.raises(Refused) as e:
        await hook_off.handle(signed(body), body, "t")
    assert e.value.status == 404
