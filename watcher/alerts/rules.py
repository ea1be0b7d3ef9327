"""Alert rules over the daemon's own events: one outage is one message, and its end another.

A rule is `name`, `condition`, `threshold`, `notify` (notifier names), `cooldown` (s):

    update_failed    failed outcomes of a model (not of a restart); fires at `threshold`
                     consecutive failures; ends when the model is applied (or unchanged) again
    update_rejected  rejected outcomes likewise (a bad document reached the config center)
    rollback         an operator's rollback, or a failure that put the previous spec back;
                     ends with the next applied update of that model
    health_failing   HEALTH events with ok=false, `threshold` in a row; ends with ok=true
    source_down      the config center unreachable for `threshold` seconds; ends on SOURCE_UP
    rollout_aborted  a fleet rollout of a model aborted (announced once, by the member that
                     leads the rollout controller: docs/fleet.md); ends when a later rollout
                     of it completes

Per (rule, subject) an incident is open from the firing trigger to its end. While it is open
further triggers are counted, not sent (de-duplication). A firing message is sent unless one
for the same rule and subject went out less than `cooldown` seconds ago; a suppressed incident
that keeps triggering after the cooldown has passed is sent then, so that a flapping outage is
never left looking resolved. The recovery message is sent only for an incident whose firing
message was sent. `Engine` is pure (time is passed in): the feature feeds events and ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.events import Kind, Message
from watcher.core.outcome import Action, Outcome, Verdict

Condition = Literal["update_failed", "update_rejected", "rollback", "health_failing",
                    "source_down", "rollout_aborted"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    condition: Condition
    #: consecutive triggers (source_down: seconds down) before the rule fires
    threshold: float = Field(1.0, gt=0)
    notify: list[str] = Field(min_length=1)
    cooldown: float = Field(300.0, ge=0)
    recovery: bool = True
    #: only these models (empty: all)
    models: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Notification:
    rule: str
    condition: str
    status: Literal["firing", "resolved"]
    subject: str
    model: str | None
    title: str
    text: str
    count: int
    started_at: float
    at: float
    notify: tuple[str, ...]


@dataclass
class Incident:
    open: bool = False
    notified: bool = False
    count: int = 0
    started_at: float = 0.0
    last_sent: float | None = None
    reason: str = ""
    since_down: float | None = None  # source_down: when the source went down


@dataclass
class Engine:
    rules: list[Rule]
    incidents: dict[tuple[str, str], Incident] = field(default_factory=dict)
    suppressed: int = 0

    def _incident(self, rule: Rule, subject: str) -> Incident:
        return self.incidents.setdefault((rule.name, subject), Incident())

    def on_message(self, ev: Message, now: float) -> list[Notification]:
        out: list[Notification] = []
        for rule in self.rules:
            if rule.models and ev.model not in rule.models and rule.condition != "source_down":
                continue
            trigger, resolve = _classify(rule.condition, ev)
            subject = "source" if rule.condition == "source_down" else (ev.model or "")
            if rule.condition == "source_down":
                inc = self._incident(rule, subject)
                if trigger and inc.since_down is None:
                    inc.since_down, inc.reason = now, ev.reason or "source unreachable"
                elif resolve:
                    inc.since_down = None
                    out += self._resolve(rule, subject, now, "source reachable again")
                continue
            if trigger:
                out += self._trigger(rule, subject, ev.model, now, _describe(ev))
            elif resolve:
                out += self._resolve(rule, subject, now, _describe(ev))
        return out

    def tick(self, now: float) -> list[Notification]:
        """Time-based conditions (source_down) that came due by `now`."""
        out: list[Notification] = []
        for rule in self.rules:
            if rule.condition != "source_down":
                continue
            inc = self.incidents.get((rule.name, "source"))
            if (inc and inc.since_down is not None and now - inc.since_down >= rule.threshold
                    and not (inc.open and inc.notified)):
                reason = f"source unreachable for {now - inc.since_down:.0f}s: {inc.reason}"
                out += self._trigger(rule, "source", None, now, reason, count_once=True)
        return out

    def _trigger(self, rule: Rule, subject: str, model: str | None, now: float, reason: str,
                 count_once: bool = False) -> list[Notification]:
        inc = self._incident(rule, subject)
        if not (count_once and inc.open):
            inc.count += 1
        inc.reason = reason
        if not inc.open:
            if rule.condition != "source_down" and inc.count < rule.threshold:
                return []
            inc.open, inc.notified, inc.started_at = True, False, now
        if inc.notified:
            return []  # de-duplicated: this outage has had its message
        if inc.last_sent is not None and now - inc.last_sent < rule.cooldown:
            self.suppressed += 1
            return []
        inc.notified, inc.last_sent = True, now
        title = f"[FIRING] {rule.name}: {subject}"
        text = f"{reason} ({inc.count} so far)" if inc.count > 1 else reason
        return [_note(rule, "firing", subject, model, title, text, inc, now)]

    def _resolve(self, rule: Rule, subject: str, now: float, reason: str) -> list[Notification]:
        inc = self.incidents.get((rule.name, subject))
        if inc is None:
            return []
        was_open, notified = inc.open, inc.notified
        inc.open, inc.notified, inc.count = False, False, 0
        if not (was_open and notified and rule.recovery):
            return []
        inc.last_sent = now
        title = f"[RESOLVED] {rule.name}: {subject}"
        text = f"{reason}; lasted {_duration(now - inc.started_at)}"
        return [_note(rule, "resolved", subject, None if subject == "source" else subject,
                      title, text, inc, now)]


def _note(rule: Rule, status: Literal["firing", "resolved"], subject: str, model: str | None,
          title: str, text: str, inc: Incident, now: float) -> Notification:
    return Notification(rule.name, rule.condition, status, subject, model, title, text,
                        inc.count, inc.started_at, now, tuple(rule.notify))


def _classify(condition: str, m: Message) -> tuple[bool, bool]:
    """(triggers, resolves) for message `m` under `condition`."""
    if isinstance(m, Outcome):
        good = m.verdict in (Verdict.APPLIED, Verdict.NOOP) and m.action is Action.UPDATE
        if condition == "update_failed":  # a failed restart is no failed update
            return m.verdict is Verdict.FAILED and m.action is not Action.RESTART, good
        if condition == "update_rejected":  # a revision an aborted rollout held back is not
            return m.verdict is Verdict.REJECTED and m.error != "AdmissionRefused", good
        if condition == "rollback":
            rolled = m.label == "rolled_back" or m.restored is not None
            return rolled, m.verdict is Verdict.APPLIED and m.action is Action.UPDATE
        if condition == "health_failing":
            return False, good
        return False, False
    if condition == "rollout_aborted" and m.kind is Kind.ROLLOUT:
        return m.phase == "aborted", m.phase == "completed"
    if condition == "health_failing" and m.kind is Kind.HEALTH:
        return not m.ok, bool(m.ok)
    if condition == "source_down":
        return m.kind is Kind.SOURCE_DOWN, m.kind is Kind.SOURCE_UP
    return False, False


def _describe(m: Message) -> str:
    rev = f" rev {m.revision}" if m.revision else ""
    ver = f" ({m.version})" if m.version else ""
    if isinstance(m, Outcome):
        what = {"failed": f"{m.action} failed", "rejected": "revision rejected",
                "rolled_back": "rolled back", "applied": "applied", "noop": "unchanged"}.get(
            m.label, m.label)
        if m.restored:
            what += f"; {m.restored} put back"
    else:
        what = ("health gate " + ("passed" if m.ok else "failing")) if m.kind is Kind.HEALTH \
            else f"rollout {m.phase}" if m.kind is Kind.ROLLOUT else str(m.kind)
    text = f"{m.model or ''}{rev}{ver}: {what}"
    return f"{text}: {m.reason}" if m.reason else text


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
