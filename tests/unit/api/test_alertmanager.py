"""Alertmanager webhook -> one action per alert group, audited, persisted across restarts."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from watcher.api.alertmanager import AlertmanagerHook
from watcher.api.webhook import Refused, Verifier, WebhookSettings, signed_headers
from watcher.core.errors import PolicyError
from watcher.core.events import EventBus

SECRET = "unit-alertmanager-secret-0123"
TOKEN = "am-bearer-token-0123456789"


class Reconciler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def request_rollback(self, model: str, to_revision: str | None = None,
                               by: str = "operator") -> None:
        assert by == "alertmanager"
        if model == "no-history":
            raise PolicyError("no earlier stable revision")
        self.calls.append(("rollback", model))

    def request_resync(self, key: str | None) -> None:
        self.calls.append(("resync", str(key)))


class Audit:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, action: str, **fields: Any) -> None:
        self.lines.append({"action": action, **fields})


def make(tmp_path: Path, **am: Any) -> tuple[AlertmanagerHook, Any]:
    settings = WebhookSettings.parse({"secret": SECRET, "alertmanager": am})
    daemon = SimpleNamespace(bus=EventBus(), reconciler=Reconciler(), audit=Audit(),
                             settings=SimpleNamespace(state_dir=tmp_path))
    return AlertmanagerHook(daemon, Verifier(settings), settings.alertmanager), daemon


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
    assert daemon.reconciler.calls == [("rollback", "qwen-chat")]
    assert [line["action"] for line in daemon.audit.lines] == ["alertmanager_rollback"]
    assert daemon.audit.lines[0]["by"] == "alertmanager"
    # a restarted daemon remembers the group
    hook2, daemon2 = make(tmp_path)
    body3 = body + b" "
    await hook2.handle(signed(body3), body3, "test")
    assert daemon2.reconciler.calls == []
    # resolved forgets it: the next outage acts again
    resolved = payload("{}:{alertname=\"HighErrorRate\"}", "resolved", model="qwen-chat",
                       action="rollback")
    assert (await hook2.handle(signed(resolved), resolved, "t"))[1]["status"] == "resolved"
    body4 = body + b"\n\n"
    await hook2.handle(signed(body4), body4, "test")
    assert daemon2.reconciler.calls == [("rollback", "qwen-chat")]


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
    assert daemon.reconciler.calls == [("resync", "m")]
    hook3, _ = make(tmp_path)
    body = payload("g4", alertname="A", model="m", action="restart")
    result = (await hook3.handle(signed(body), body, "t"))[1]["actions"][0]["result"]
    assert result.startswith("unsupported")


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
    assert daemon.reconciler.calls == [("rollback", "m")]
    hook_off, _ = make(tmp_path, enabled=False)
    with pytest.raises(Refused) as e:
        await hook_off.handle(signed(body), body, "t")
    assert e.value.status == 404
