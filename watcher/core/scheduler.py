"""Per-model work queue: the latest change wins, a quiet window settles bursts, one worker
per model serializes everything done to it, and at most `max_parallel` models apply at once.

One model server sits behind every model, so a burst over many models must not become a
burst of applies: a start with 100 models once overloaded it (docs/performance.md). A model
takes its change only once a slot is free, so it always takes the newest one.

Workers are supervised: the handler (the pipeline) never raises by contract; if it does
anyway, the exception is logged with its traceback and the worker goes on with the model's
next change. `on_settled(key)` is told whenever a model has no work left (readiness).
"""

from __future__ import annotations

import asyncio
import logging
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
        self._wake: dict[str, asyncio.Event] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Shared by workers and operator actions: applies at once, whoever asked.
        self.slots = asyncio.Semaphore(max_parallel)
        self._tasks = TaskSet("scheduler")
        #: `once`: act on each change at once, without the quiet window.
        self.immediate = False

    def submit(self, change: Change) -> None:
        """Make `change` its model's next work (replacing an older pending one)."""
        key = change.key
        self._pending[key] = change
        self._quiet.setdefault(key, Quiescence(*self._wait)).tick()
        self._wake.setdefault(key, asyncio.Event()).set()
        worker = self._workers.get(key)
        if worker is None or worker.done():
            self._workers[key] = self._tasks.spawn(self._worker(key), f"reconcile:{key}")

    def pending(self, key: str) -> Change | None:
        return self._pending.get(key)

    def lock(self, key: str) -> asyncio.Lock:
        """The model's lock: held by its worker while it applies, and by operator actions."""
        return self._locks.setdefault(key, asyncio.Lock())

    async def _worker(self, key: str) -> None:
        wake, quiet = self._wake[key], self._quiet[key]
        try:
            while key in self._pending:
                wake.clear()
                delay = 0.0 if self.immediate else quiet.remaining()
                if delay > 0:
                    try:
                        await asyncio.wait_for(wake.wait(), delay)
                        continue  # another change re-armed the window
                    except TimeoutError:
                        pass
                async with self.slots:
                    change = self._pending.pop(key)  # the newest, taken once a slot is free
                    quiet.reset()
                    async with self.lock(key):
                        try:
                            await self._handle(change)
                        except Exception:  # the handler's contract is broken: say so, go on
                            log.exception("%s@%s: the handler raised; the worker goes on",
                                          key, change.revision, extra={"model": key})
        finally:
            self._on_settled(key)

    async def idle(self) -> None:
        """Wait until no model has work (for `once` and tests)."""
        while True:
            workers = [t for t in self._workers.values() if not t.done()]
            if not workers and not self._pending:
                return
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.sleep(0)

    async def drain(self, grace: float) -> None:
        """Stop taking work; let workers finish within `grace` seconds, then cancel them
        (an interrupted apply leaves its intent: the next start converges)."""
        self._pending.clear()
        workers = [t for t in self._workers.values() if not t.done()]
        if workers:
            log.info("waiting up to %gs for %d apply(s) in flight", grace, len(workers))
            await asyncio.wait(workers, timeout=grace)
        await self._tasks.cancel_all()
