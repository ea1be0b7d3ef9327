"""Events the reconciler emits; audit, metrics, alerts and sd_notify subscribe to them.

Subscribers are plain callables run inline: they must not block (enqueue and return).
A subscriber that raises is logged and never stops the reconciler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger("watcher.core.events")


class Kind(StrEnum):
    SEEN = "seen"                    # a new revision arrived (after coalescing)
    REJECTED = "rejected"            # parse / policy / verify refused it; server untouched
    APPLYING = "applying"            # intent recorded, about to act
    APPLIED = "applied"              # committed
    NOOP = "noop"                    # valid, nothing to change on the server; committed
    FAILED = "failed"                # apply or health gate failed; last good serves
    ROLLED_BACK = "rolled_back"      # the previous good spec was put back
    DELETED = "deleted"              # the document disappeared from the source
    HEALTH = "health"                # a health gate finished (fields: ok, probes)
    SOURCE_UP = "source_up"
    SOURCE_DOWN = "source_down"
    RECONCILED = "reconciled"        # the first full reconcile after start is done
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Event:
    kind: Kind
    model: str | None = None
    revision: str | None = None
    version: str | None = None
    reason: str | None = None
    plan: str | None = None
    duration: float | None = None
    trace_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = str(self.kind)
        return {k: v for k, v in d.items() if v not in (None, {}, "")}


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)
        return lambda: self._subs.remove(fn)

    def emit(self, event: Event) -> None:
        for fn in list(self._subs):
            try:
                fn(event)
            except Exception:  # a broken subscriber must not stop the reconciler
                log.exception("event subscriber %r failed on %s", fn, event.kind)
