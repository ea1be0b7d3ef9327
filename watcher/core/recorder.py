"""Where every Outcome is recorded: the state database, one log line, then the event bus.

This is the only writer of finished history rows and of the applied table, the only place
that logs a decision, and the only publisher of outcomes; audit, metrics, alerts, sd_notify
and the CLI's buffer subscribe on the bus. Recording never raises: a state write that fails
(a full disk, a locked database) is logged with the outcome it was for, and the outcome is
still published, so the alert goes out even when the database cannot take the row.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from watcher.core.events import EventBus, Message
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.observability.tracing import get_tracer

log = logging.getLogger("watcher.core.recorder")

_LEVELS = {Verdict.APPLIED: logging.INFO, Verdict.NOOP: logging.INFO,
           Verdict.DELETED: logging.WARNING, Verdict.SUPERSEDED: logging.WARNING,
           Verdict.REJECTED: logging.ERROR, Verdict.FAILED: logging.ERROR}


class Recorder:
    def __init__(self, state: State, bus: EventBus) -> None:
        self.state = state
        self.bus = bus

    def record(self, outcome: Outcome, row: int | None = None, *,
               spec: ModelSpec | None = None, previous_revision: str | None = None) -> Outcome:
        """Write `outcome` (finishing history row `row`; `spec` is what now serves when the
        outcome commits one; `previous_revision` is the one a rollback moved away from),
        log it, publish it. Returns it, so that callers can `return recorder.record(...)`."""
        try:
            with get_tracer().span("commit"):
                self._write(outcome, row, spec, previous_revision)
        except Exception:
            log.exception("%s@%s: could not record %s in the state database; the outcome is "
                          "logged and published only", outcome.model, outcome.revision,
                          outcome.label, extra=_context(outcome))
        self._log(outcome)
        self.bus.emit(outcome)
        return outcome

    def _write(self, o: Outcome, row: int | None, spec: ModelSpec | None,
               previous_revision: str | None) -> None:
        plan = o.describe_plan()
        if o.verdict in (Verdict.APPLIED, Verdict.NOOP) and spec is not None and row is not None:
            self.state.commit(row, o.model, o.revision, spec.version, spec.canonical(),
                              outcome=o.label, plan=plan, reason=o.reason or None, stable=True)
            if o.action is Action.ROLLBACK and previous_revision not in (None, o.revision):
                # A revision rolled back away from is no rollback target any more.
                self.state.mark_unstable(o.model, str(previous_revision))
            return
        if o.verdict is Verdict.DELETED and o.unloaded:
            self.state.forget(o.model)
        if o.verdict is Verdict.FAILED or o.verdict is Verdict.SUPERSEDED:
            self.state.clear_intent(o.model)
        if row is not None:
            self.state.finish(row, o.label, o.reason or None, plan=plan)

    def _log(self, o: Outcome) -> None:
        level = _LEVELS[o.verdict]
        subject = f"{o.model}@{o.revision}"
        if o.verdict is Verdict.APPLIED:
            took = f" in {o.duration:.2f}s" if o.duration is not None else ""
            what = {Action.ROLLBACK: f"rolled back to version {o.version}",
                    Action.RESTART: f"restarted version {o.version}"}.get(
                o.action, f"applied version {o.version}")
            text = f"{subject}: {what} by {o.how or o.plan_kind}{took}"
            if o.reason:
                text += f" ({o.reason})"
        elif o.verdict is Verdict.NOOP:
            text = f"{subject}: nothing to change on the server ({o.reason or 'no change'})"
        elif o.verdict is Verdict.REJECTED:
            text = f"{subject} rejected: {o.reason}; the running server is untouched"
        elif o.verdict is Verdict.FAILED:
            text = f"{subject}: {o.action} failed: {o.reason}; the last good state keeps serving"
        else:
            text = f"{subject}: {o.reason}"
        log.log(level, "%s", text, extra=_context(o))


def _context(o: Outcome) -> dict[str, Any]:
    return {"model": o.model, "revision": o.revision, "reason": o.reason or None,
            "outcome": o.label, "trace_id": o.trace_id}


class OutcomeBuffer:
    """Outcomes as they are published (the last `size`; None: all), for `once` and tests:
    a bus subscriber."""

    def __init__(self, size: int | None = None) -> None:
        self.outcomes: deque[Outcome] = deque(maxlen=size)

    def __call__(self, message: Message) -> None:
        if isinstance(message, Outcome):
            self.outcomes.append(message)

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict in (Verdict.REJECTED, Verdict.FAILED)]
