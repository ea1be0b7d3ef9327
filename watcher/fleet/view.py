"""What this daemon knows of the fleet's rollout records, and how fresh that knowledge is.

Two feeds fill it: the stream of every record (`watch_rollouts`, for prompt step changes)
and fresh reads (`read_rollout`) asked for by the admission. A fresh read is what makes the
admission safe: the publisher writes the record BEFORE the document, and the admission
decides about a revision only with a record read after the revision was observed, so a
record can never be missed because its stream lagged behind the document's.

Of two versions of a record, the newer (creation time, then generation) is kept: a lagging
stream must not put an older step back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from watcher.fleet.backend import Stored


def _order(stored: Stored) -> tuple[float, str, int]:
    r = stored.record
    return (r.created_at, r.id, r.generation)


class RolloutView:
    def __init__(self) -> None:
        self.records: dict[str, Stored] = {}
        #: model -> wall-clock time at which the newest completed fresh read STARTED
        self.read_at: dict[str, float] = {}
        #: models whose fresh read the admission asked for
        self.wanted: set[str] = set()
        self.loaded = False
        #: set when a read is wanted (the feature's reader waits on it)
        self.wake = asyncio.Event()
        self._listeners: list[Callable[[set[str]], None]] = []

    def subscribe(self, fn: Callable[[set[str]], None]) -> None:
        """`fn(models)` after any change of those models' records or freshness."""
        self._listeners.append(fn)

    def _changed(self, models: set[str]) -> None:
        if models:
            for fn in list(self._listeners):
                fn(models)

    def fresh(self, model: str, since: float) -> bool:
        return self.read_at.get(model, float("-inf")) >= since

    def want(self, model: str) -> None:
        self.wanted.add(model)
        self.wake.set()

    def record(self, model: str) -> Stored | None:
        return self.records.get(model)

    def replace_all(self, snapshot: dict[str, Stored]) -> None:
        """A whole stream snapshot (records are never deleted; absent ones are kept)."""
        changed = {m for m, s in snapshot.items() if self._keep(m, s)}
        first = not self.loaded
        self.loaded = True
        self._changed(changed | (set(self.records) if first else set()))

    def read(self, model: str, stored: Stored | None, started: float) -> None:
        """A fresh read of `model` that started at `started` (time.time())."""
        if stored is not None:
            self._keep(model, stored)
        self.read_at[model] = max(self.read_at.get(model, float("-inf")), started)
        self.wanted.discard(model)
        self._changed({model})

    def wrote(self, stored: Stored) -> None:
        """What this daemon itself just wrote (the controller)."""
        if self._keep(stored.record.model, stored):
            self._changed({stored.record.model})

    def _keep(self, model: str, stored: Stored) -> bool:
        old = self.records.get(model)
        if old is not None and (_order(old) > _order(stored) or old.version == stored.version):
            return False
        self.records[model] = stored
        return True
