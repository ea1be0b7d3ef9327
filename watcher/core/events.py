"""The event bus: outcomes (core/outcome.py) and the daemon's lifecycle signals.

Two kinds of message travel on it: an `Outcome` (what became of a revision or an action;
published by the Recorder only) and an `Event` (a signal on the way: a revision seen, an
apply starting, a health gate verdict, the source's connectivity, readiness, reload, stop).
Subscribers (audit, metrics, alerts, sd_notify, the CLI's buffer) are plain callables run
inline: they must not block (enqueue and return). A subscriber that raises is logged and
never stops the daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from watcher.core.outcome import Outcome
from watcher.core.plan import Plan

log = logging.getLogger("watcher.core.events")


class Kind(StrEnum):
    SEEN = "seen"                    # a new revision is taken up (after coalescing)
    APPLYING = "applying"            # intent recorded, about to act
    HEALTH = "health"                # a health gate finished (ok, probes)
    SOURCE_UP = "source_up"
    SOURCE_DOWN = "source_down"
    RECONCILED = "reconciled"        # the first full reconcile after start is done
    RELOADING = "reloading"
    STOPPING = "stopping"
    ROLLOUT = "rollout"              # a fleet rollout changed phase (watcher/fleet: `phase`)


@dataclass(frozen=True)
class Event:
    kind: Kind
    model: str | None = None
    revision: str | None = None
    version: str | None = None
    reason: str | None = None
    plan: Plan | None = None
    trace_id: str | None = None
    #: HEALTH: the verdict and how many probes it took
    ok: bool | None = None
    probes: int | None = None
    #: ROLLOUT: started | step | paused | resumed | completed | aborted
    phase: str | None = None
    at: float = field(default_factory=time.time)


Message = Event | Outcome
Subscriber = Callable[[Message], None]


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)
        return lambda: self._subs.remove(fn)

    def emit(self, message: Message) -> None:
        for fn in list(self._subs):
            try:
                fn(message)
            except Exception:  # a broken subscriber must not stop the daemon
                log.exception("event subscriber %r failed on %s", fn, _name(message))


def _name(message: Message) -> str:
    return str(message.kind) if isinstance(message, Event) else f"outcome {message.label}"
