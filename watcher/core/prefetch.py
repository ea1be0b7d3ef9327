"""Prefetch: a revision the admission keeps waiting (a fleet member outside the current
cohort, a member waiting for its step) has its remote weights staged meanwhile, so that when
its step comes the apply finds them in the cache and the step costs the switch, not the
download.

It does only what the pipeline does before an apply, in the same order, so a document gets
no further than it would: decode (with the document bounds), policy, signature, then the
stager (which verifies every byte against the document's digests). Nothing is recorded: the
revision is not handled yet and is handled exactly once, when it is admitted. A prefetch
that fails is one INFO line; the apply fetches again and records the outcome then. A
download still running when the revision is admitted is shared, not repeated (the stager
keeps one download per blob digest). Documents without remote weights are left alone: a
local file would only be hashed twice.
"""

from __future__ import annotations

import asyncio
import logging

from watcher.core import policy
from watcher.core.errors import WatcherError
from watcher.core.executor import Executor
from watcher.core.spec import ModelSpec, parse_document
from watcher.core.state import State
from watcher.core.tasks import TaskSet
from watcher.settings import Settings
from watcher.sources.base import Change

log = logging.getLogger("watcher.core.prefetch")


class Prefetcher:
    """At most one prefetch per model, for its newest waiting revision."""

    def __init__(self, settings: Settings, state: State, executor: Executor) -> None:
        self.settings = settings
        self.state = state
        self.executor = executor
        self._tasks = TaskSet("weights prefetch")
        self._running: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._tried: dict[str, str] = {}  # key -> last revision prefetched (or tried)

    def want(self, change: Change) -> None:
        """`change` waits for its admission: stage its weights now, once per revision."""
        if change.deleted or change.content is None or not self.executor.weights.prefetches:
            return
        if self._tried.get(change.key) == change.revision:
            return
        self._tried[change.key] = change.revision
        running = self._running.pop(change.key, None)
        if running is not None:
            running[1].cancel()  # a newer revision: its blobs' downloads go on if shared
        task = self._tasks.spawn(self._prefetch(change), f"prefetch:{change.key}")
        self._running[change.key] = (change.revision, task)
        task.add_done_callback(lambda _: self._forget(change.key, task))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._running.get(key, (None, None))[1] is task:
            del self._running[key]

    def running(self, key: str) -> str | None:
        """The revision being prefetched for `key`, if any."""
        entry = self._running.get(key)
        return entry[0] if entry else None

    async def _prefetch(self, change: Change) -> None:
        assert change.content is not None
        where = f"{change.key}@{change.revision}"
        try:
            spec = parse_document(change.content, key=change.key,
                                  max_bytes=self.settings.reconcile.max_document_bytes)
            if not self.executor.weights.remote(spec):
                return
            applied = self.state.applied(change.key)
            previous = ModelSpec.model_validate(applied.spec) if applied else None
            policy.check(spec, environment=self.settings.environment,
                         settings=self.settings.policy, applied=previous)
            log.info("%s: prefetching its weights while it waits for its step", where,
                     extra={"model": change.key, "revision": change.revision})
            await self.executor.verify(spec)
        except WatcherError as exc:
            log.info("%s: prefetch stopped (the apply will fetch and record the outcome): %s",
                     where, exc.reason, extra={"model": change.key, "revision": change.revision})
            return
        log.info("%s: weights staged ahead of its step", where,
                 extra={"model": change.key, "revision": change.revision})

    async def aclose(self) -> None:
        await self._tasks.cancel_all()
        self._running.clear()
