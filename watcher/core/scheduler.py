"""Per-model work queue: the latest change wins, a quiet window settles bursts, one change
of a model is handled at a time, and at most `max_parallel` models are handled at once.

One model server sits behind every model, so a burst over many models must not become a
burst of applies: a start with 100 models once overloaded it (docs/performance.md). The work
is done by a pool of `max_parallel` workers, not a task per model: a snapshot of 10,000
documents costs 10,000 dictionary entries, not 10,000 tasks. A worker takes the model whose
quiet window ended first and that no other worker is handling, and takes its newest change
only then, so it always acts on the newest one.

Workers are supervised: the handler (the pipeline) never raises by contract; if it does
anyway, the exception is logged with its traceback and the worker goes on. `on_settled(key)`
is told whenever a model has no work left (readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

from watcher.core.quiescence import Quiescence
from watcher.core.tasks import TaskSet
from watcher.sources.base import Change

log = logging.getLogger("watcher.core.scheduler")


class Scheduler:
    def __init__(self, handle: Callable[[Change], Awaitable[object]], *, wait_min: float,
                 wait_max: float, max_parallel: int,
                 on_settled: Callable[[str], None] = lambda key: None) -> None:
        self._handle = handle
        self._wait = (wait_min, wait_max)
        self._on_settled = on_settled
        self._pending: dict[str, Change] = {}
        self._quiet: dict[str, Quiescence] = {}
        self._busy: set[str] = set()
        #: (fire_at, key) of every pending model; stale entries are skipped when popped
        self._due: list[tuple[float, str]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._size = max_parallel
        #: Shared by the workers and operator actions: applies at once, whoever asked.
        self.slots = asyncio.Semaphore(max_parallel)
        self._tasks = TaskSet("scheduler")
        self._draining = False
        #: `once`: act on each change at once, without the quiet window.
        self.immediate = False

    def submit(self, change: Change) -> None:
        """Make `change` its model's next work (replacing an older pending one)."""
        if self._draining:
            return
        key = change.key
        self._pending[key] = change
        quiet = self._quiet.setdefault(key, Quiescence(*self._wait))
        quiet.tick()
        heapq.heappush(self._due, (quiet.fire_at, key))
        self._idle.clear()
        self._changed.set()
        if not len(self._tasks):
            for n in range(self._size):
                self._tasks.spawn(self._worker(), f"worker-{n}")

    def pending(self, key: str) -> Change | None:
        return self._pending.get(key)

    def lock(self, key: str) -> asyncio.Lock:
        """The model's lock: held while a worker handles it, and by operator actions."""
        return self._locks.setdefault(key, asyncio.Lock())

    def _next(self) -> tuple[str | None, float | None]:
        """(a model due now, else None; seconds until the next one is due, else None).
        A model being handled is skipped: it goes back on the heap when its worker is done."""
        now = time.monotonic()
        while self._due:
            fire_at, key = self._due[0]
            quiet = self._quiet.get(key)
            if quiet is None or key in self._busy or quiet.fire_at != fire_at:
                heapq.heappop(self._due)  # stale: taken, being handled, or re-armed since
                continue
            if self.immediate or fire_at <= now:
                heapq.heappop(self._due)
                return key, None
            return None, fire_at - now
        return None, None

    async def _worker(self) -> None:
        while True:
            key, wait = self._next()
            if key is None:
                self._changed.clear()
                if not self._busy and not self._pending:
                    self._idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)
                continue
            self._busy.add(key)
            try:
                async with self.slots, self.lock(key):
                    change = self._pending.pop(key, None)  # the newest, once a slot is free
                    self._quiet.pop(key, None)
                    if change is None:  # drained meanwhile
                        continue
                    try:
                        await self._handle(change)
                    except Exception:  # the handler's contract is broken: say so, go on
                        log.exception("%s@%s: the handler raised; the scheduler goes on",
                                      key, change.revision, extra={"model": key})
            finally:
                self._busy.discard(key)
                if key in self._pending:  # changed while handled: due again when its window ends
                    heapq.heappush(self._due, (self._quiet[key].fire_at, key))
                else:
                    lock = self._locks.get(key)
                    if lock is not None and not lock.locked():
                        del self._locks[key]
                    self._on_settled(key)
                self._changed.set()

    async def idle(self) -> None:
        """Wait until no model has work (for `once` and tests)."""
        await self._idle.wait()

    async def drain(self, grace: float) -> None:
        """Stop taking work; let the changes in hand finish within `grace` seconds, then
        cancel them (an interrupted apply leaves its intent: the next start converges)."""
        self._draining = True
        self._pending.clear()
        self._quiet.clear()
        self._due.clear()
        if self._busy:
            log.info("waiting up to %gs for %d apply(s) in flight", grace, len(self._busy))
            try:
                async with asyncio.timeout(grace):
                    while self._busy:
                        self._changed.clear()
                        await self._changed.wait()
            except TimeoutError:
                pass
        await self._tasks.cancel_all()
