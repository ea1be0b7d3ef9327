"""Alerts: rules over the daemon's events (rules.py), payload formats of the notifiers
(formats.py), background delivery with retries (delivery.py).

Settings, `[alerts]` in watcher.toml:

    [alerts.notifiers.ops]
    kind = "dingtalk"                       # webhook | slack | dingtalk | feishu | lark | wecom
    url_env = "MW_DINGTALK_URL"             # or url = "..." (a robot URL holds its token)
    secret_env = "MW_DINGTALK_SECRET"       # optional signing secret (or secret = "...")

    [[alerts.rules]]
    name = "update-failed"
    condition = "update_failed"             # see rules.py
    threshold = 1
    notify = ["ops"]
    cooldown = 600

`serve(ctx)` returns at once when no rule is configured. Every secret is registered with
the log redaction filter and kept in SecretStr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watcher.alerts.delivery import Dispatcher
from watcher.alerts.formats import NotifierSettings
from watcher.alerts.rules import Engine, Notification, Rule
from watcher.core.errors import SettingsError
from watcher.core.events import Message
from watcher.observability.logs import register_secret
from watcher.plugins import parse_options

if TYPE_CHECKING:
    from watcher.features import FeatureContext

log = logging.getLogger("watcher.alerts")
TICK = 0.25


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notifiers: dict[str, NotifierSettings] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_notifiers(self) -> AlertSettings:
        for rule in self.rules:
            unknown = [n for n in rule.notify if n not in self.notifiers]
            if unknown:
                raise ValueError(f"rule {rule.name!r} names unknown notifiers: {unknown}")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return self

    @classmethod
    def parse(cls, raw: dict[str, Any], env: dict[str, str] | None = None) -> AlertSettings:
        """Validate `[alerts]`, resolving `url_env`/`secret_env` from the environment."""
        env = dict(os.environ) if env is None else env
        data = dict(raw)
        notifiers = {}
        for name, opts in dict(data.get("notifiers") or {}).items():
            opts = dict(opts) if isinstance(opts, dict) else opts
            if isinstance(opts, dict):
                for key in ("url", "secret"):
                    var = opts.pop(f"{key}_env", None)
                    if var is not None:
                        if var not in env:
                            raise SettingsError(f"alerts.notifiers.{name}.{key}_env: "
                                                f"environment variable {var} is not set")
                        opts[key] = env[var]
            notifiers[name] = opts
        if notifiers:
            data["notifiers"] = notifiers
        parsed = parse_options(cls, data, "alerts")
        _register_secrets(parsed)
        return parsed


def _register_secrets(s: AlertSettings) -> None:
    for n in s.notifiers.values():
        register_secret(n.url.get_secret_value())
        if n.secret is not None:
            register_secret(n.secret.get_secret_value())


class AlertFeature:
    """Engine + dispatcher wired to one daemon's event bus and metrics."""

    def __init__(self, ctx: FeatureContext, settings: AlertSettings) -> None:
        self.engine = Engine(settings.rules)
        self.metrics = ctx.metrics
        self.dispatcher = Dispatcher(settings.notifiers, self._record)

    def _record(self, n: Notification, notifier: str, result: str) -> None:
        self.metrics.alert_sent(n.rule, notifier, n.status, result)

    def on_message(self, message: Message) -> None:
        self._submit(self.engine.on_message(message, time.time()))

    def _submit(self, notes: list[Notification]) -> None:
        for n in notes:
            log.warning("alert %s: %s", n.title, n.text, extra={"model": n.model})
            self.dispatcher.submit(n)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self._submit(self.engine.tick(time.time()))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.dispatcher.run(), name="alerts:dispatch")
            tg.create_task(self._ticker(), name="alerts:tick")


async def serve(ctx: FeatureContext) -> None:
    """Evaluate the alert rules on the daemon's events until cancelled (no rules: return)."""
    settings = AlertSettings.parse(ctx.settings.alerts)
    if not settings.rules:
        return
    feature = AlertFeature(ctx, settings)
    unsubscribe = ctx.bus.subscribe(feature.on_message)
    log.info("alerts: %d rules, %d notifiers", len(settings.rules), len(settings.notifiers))
    try:
        await feature.run()
    finally:
        unsubscribe()
