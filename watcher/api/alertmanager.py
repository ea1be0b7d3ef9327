"""Self-healing: Prometheus Alertmanager's webhook -> rollback / restart / resync.

`POST /hooks/alertmanager` takes Alertmanager's webhook payload (version 4:
`{groupKey, status, alerts: [{status, labels, ...}], ...}`), authenticated by the webhook
HMAC or, because Alertmanager itself cannot compute one, by `Authorization: Bearer` with
`webhook.alertmanager.bearer_token`. Every firing alert whose labels name a model
(`model_label`) and an allowed action (`action_label`, or `alertname_actions[alertname]`)
triggers that action once per alert group: Alertmanager re-sends a group every
`repeat_interval`, and a repeat must not roll back twice. A `resolved` notification forgets
the group, so the next outage acts again. Handled groups survive a restart of the daemon
(a small JSON file in the state directory). Every action is written to the audit log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.api.webhook import (
    AlertmanagerSettings,
    Refused,
    Reply,
    Verifier,
    operator_of,
    parse_json,
)
from watcher.core.errors import WatcherError

if TYPE_CHECKING:
    from watcher.features import FeatureContext

log = logging.getLogger("watcher.api.alertmanager")

#: the actions an alert may ask for (Operator requests)
ACTIONS = ("rollback", "restart", "resync")


class GroupMemory:
    """(groupKey, model, action) already acted on, with when; persisted as JSON."""

    def __init__(self, path: Path | None, ttl: float) -> None:
        self.path, self.ttl = path, ttl
        self._done: dict[str, float] = {}
        if path is not None and path.is_file():
            try:
                self._done = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("alertmanager: ignoring unreadable %s: %s", path, exc)

    @staticmethod
    def key(group: str, model: str, action: str) -> str:
        return json.dumps([group, model, action])

    def seen(self, key: str, now: float) -> bool:
        at = self._done.get(key)
        return at is not None and now - at < self.ttl

    def remember(self, key: str, now: float) -> None:
        self._done = {k: v for k, v in self._done.items() if now - v < self.ttl}
        self._done[key] = now
        self._save()

    def forget_group(self, group: str) -> None:
        before = len(self._done)
        self._done = {k: v for k, v in self._done.items() if json.loads(k)[0] != group}
        if len(self._done) != before:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self._done))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("alertmanager: cannot persist handled groups to %s: %s", self.path, exc)


class AlertmanagerHook:
    path = "/hooks/alertmanager"

    def __init__(self, ctx: FeatureContext, verifier: Verifier, settings: AlertmanagerSettings) -> None:
        self.ctx = ctx
        self.verifier = verifier
        self.settings = settings
        memory_path = ctx.settings.state_dir / "alertmanager-groups.json"
        memory_path.parent.mkdir(parents=True, exist_ok=True)
        self.memory = GroupMemory(memory_path, settings.group_memory)

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        token = self.settings.bearer_token
        if token is not None and "authorization" in headers:
            self.verifier.check_size(len(body))
            if not self.verifier.verify_bearer(headers, token):
                raise Refused(401, "bad bearer token")
            return
        self.verifier.verify(headers, body)

    def wanted(self, payload: Any) -> list[tuple[str, str, str]]:
        """(model, action, alertname) for each firing alert that asks for an action."""
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise Refused(400, "not an Alertmanager payload (no alerts list)")
        out: list[tuple[str, str, str]] = []
        for alert in payload["alerts"]:
            if not isinstance(alert, dict) or alert.get("status", "firing") != "firing":
                continue
            labels = alert.get("labels") or {}
            if not isinstance(labels, dict):
                continue
            alertname = str(labels.get("alertname", ""))
            model = labels.get(self.settings.model_label)
            action = labels.get(self.settings.action_label) or \
                self.settings.alertname_actions.get(alertname)
            if not isinstance(model, str) or not model or action not in self.settings.actions:
                continue
            if action not in ACTIONS:
                continue
            if (model, action, alertname) not in out:
                out.append((model, str(action), alertname))
        return out

    async def handle(self, headers: Mapping[str, str], body: bytes, peer: str) -> Reply:
        if not self.settings.enabled:
            raise Refused(404, "alertmanager hook is disabled")
        self.authenticate(headers, body)
        operator_of(self.ctx)  # 503 before the daemon can act, and nothing remembered
        payload = parse_json(body)
        wanted = self.wanted(payload)
        group = str(payload.get("groupKey", ""))
        now = time.time()
        if payload.get("status") == "resolved":
            self.memory.forget_group(group)
            log.info("alertmanager: group resolved; next firing acts again")
            return 200, {"status": "resolved", "actions": []}
        done: list[dict[str, str]] = []
        for model, action, alertname in wanted:
            key = GroupMemory.key(group, model, action)
            if self.memory.seen(key, now):
                log.info("alertmanager: %s of %s already done for this group; repeat ignored",
                         action, model, extra={"model": model})
                done.append({"model": model, "action": action, "result": "duplicate"})
                continue
            self.memory.remember(key, now)
            result = await self._act(model, action, alertname, group)
            done.append({"model": model, "action": action, "result": result})
        return 200, {"status": "ok", "actions": done}

    async def _act(self, model: str, action: str, alertname: str, group: str) -> str:
        operator = operator_of(self.ctx)
        try:
            if action == "rollback":
                operator.request_rollback(model, by="alertmanager")
            elif action == "restart":
                operator.request_restart(model, by="alertmanager")
            else:
                operator.request_resync(model)
            result = "requested"
        except WatcherError as exc:
            result = f"failed: {exc.reason}"
        level = logging.INFO if result == "requested" else logging.WARNING
        log.log(level, "alertmanager: %s of %s (alert %s): %s", action, model, alertname, result,
                extra={"model": model, "outcome": result})
        self.ctx.metrics.action(action, result.partition(":")[0])
        self.ctx.audit.write(f"alertmanager_{action}", model=model, result=result, alert=alertname,
                             group=group, by="alertmanager")
        return result
