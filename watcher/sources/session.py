"""The one loop every source runs in: snapshot, stream, back off, report, resync.

consul-template's `View.poll` and confd's `monitorPrefix` are the single places that retry,
back off, report up/down and re-read; the backends only fetch. Here that place is
`SourceSession.run()`, for every source (sources/base.py has the contract):

* **snapshot, then changes.** A session starts with `source.snapshot()` delivered to the sink
  as a `snapshot` (keys absent are deletes), then delivers each `Batch` of
  `source.changes(cursor)` and keeps the cursor after it.
* **outages.** `SourceUnavailable` (and any other exception a source raises: the session never
  ends while the daemon runs) is retried with exponential backoff and jitter (tenacity),
  capped at `max_backoff` (`auth_retry_interval` while the credentials are refused). The
  sink hears `connectivity(False)` and the log gets one WARNING (ERROR for credentials) per
  outage; recovery is one INFO and `connectivity(True)`. A stream that breaks after it was up
  is reconnected at once, without an outage, at most once per FREE_RECONNECT_EVERY seconds (a
  failover to another member is not an outage; a flapping one still backs off).
* **resume or re-read.** After an outage a `resumable` source continues from its cursor
  (nothing missed, nothing twice); any other source starts with a fresh snapshot.
* **resync.** Every `resync_interval`, on `ResyncNeeded`, and on `request_resync()` (a webhook,
  an operator) the stream is closed and a fresh snapshot taken. Since one task delivers
  everything, an older event can never be delivered after the newer state a re-read brings.
* **liveness.** While no batch arrives, `source.check()` runs every `check_interval`: a
  connection that died silently becomes an outage instead of a quiet stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from watcher.core.errors import SourceUnavailable, WatcherError
from watcher.sources.base import Batch, ResyncNeeded, Sink, Source, SourceAuthError

log = logging.getLogger("watcher.sources.session")

#: A broken stream is reconnected at once (a failover, not an outage) at most this often.
FREE_RECONNECT_EVERY = 5.0


class SourceSession:
    """Runs `source` into `sink` until cancelled; see the module docstring for the promises."""

    def __init__(self, source: Source, sink: Sink) -> None:
        self.source = source
        self.sink = sink
        self._resync = asyncio.Event()
        self._cursor: int | None = None
        self._resync_at: float | None = None
        self._up: bool | None = None
        self._down_since = 0.0
        self._last_free = -FREE_RECONNECT_EVERY
        self._free = False
        self._auth_streak = 0
        opts = source.options
        self._backoff = wait_exponential_jitter(multiplier=0.2, max=opts.max_backoff, jitter=0.5)
        self._auth_backoff = wait_exponential_jitter(multiplier=1.0, max=opts.auth_retry_interval,
                                                     jitter=0.5)

    def request_resync(self) -> None:
        """Re-read everything at the next moment the stream allows (never concurrently)."""
        self._resync.set()

    async def run(self) -> None:
        """Deliver until cancelled. Never raises for an outage; backoff restarts after a
        session that ended by a resync."""
        while True:
            # Every Exception is an outage (a source's bug included): the session must
            # never end while the daemon runs. CancelledError is not an Exception.
            retrying = AsyncRetrying(retry=retry_if_exception_type(Exception),
                                     wait=self._wait, before_sleep=self._before_sleep,
                                     reraise=True)
            await retrying(self._session)

    # -- one session ---------------------------------------------------------------
    async def _session(self) -> None:
        """Snapshot if there is no cursor, then stream until a resync is due."""
        if self._cursor is None:
            self._resync.clear()
            snapshot = await self.source.snapshot()
            self._connected("snapshot")
            self.sink.snapshot(snapshot.documents)
            self._cursor = snapshot.cursor
            interval = self.source.options.resync_interval
            self._resync_at = time.monotonic() + interval if interval else None
            log.debug("%s: snapshot of %d documents at cursor %d", self.source.name,
                      len(snapshot.documents), snapshot.cursor)
        try:
            await self._stream(self._cursor)
        except ResyncNeeded as exc:
            log.info("%s: %s; re-reading everything", self.source.name, exc.reason)
            self._cursor = None
        except SourceUnavailable:
            if not self.source.resumable:
                self._cursor = None
            raise

    async def _stream(self, cursor: int) -> None:
        """Deliver batches; return when a resync is due or requested (cursor dropped)."""
        batches: AsyncIterator[Batch] = aiter(self.source.changes(cursor))
        following: asyncio.Task[Batch | None] | None = None
        requested = asyncio.ensure_future(self._requested())
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(self._next(batches))
                done, _ = await asyncio.wait({following, requested}, timeout=self._idle_timeout(),
                                             return_when=asyncio.FIRST_COMPLETED)
                if following in done:
                    batch = following.result()
                    following = None
                    if batch is None:
                        raise SourceUnavailable(f"{self.source.name}: the change stream ended")
                    self._deliver(batch)
                elif requested in done or self._resync_due():
                    log.debug("%s: %s resync", self.source.name,
                              "requested" if requested in done else "periodic")
                    self._cursor = None
                    return
                else:
                    await self.source.check()
        finally:
            for task in (following, requested):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]

    @staticmethod
    async def _next(batches: AsyncIterator[Batch]) -> Batch | None:
        """The next batch; None when the stream ended (a stream never should)."""
        return await anext(batches, None)

    async def _requested(self) -> Batch | None:
        await self._resync.wait()
        return None

    def _deliver(self, batch: Batch) -> None:
        self._cursor = batch.cursor
        self._connected("stream")
        for change in batch.changes:
            self.sink.changed(change)

    def _idle_timeout(self) -> float:
        timeout = self.source.options.check_interval
        if self._resync_at is not None:
            timeout = min(timeout, max(0.0, self._resync_at - time.monotonic()))
        return timeout

    def _resync_due(self) -> bool:
        return self._resync_at is not None and time.monotonic() >= self._resync_at

    # -- outages -------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        now = time.monotonic()
        self._free = self._up is True and now - self._last_free >= FREE_RECONNECT_EVERY
        if self._free:
            self._last_free = now
            return 0.0
        if isinstance(exc, SourceAuthError):
            # Its own streak: a starting center refuses good credentials for a moment, so
            # the first retries come soon whatever failed before; then rarely.
            self._auth_streak += 1
            streak = RetryCallState(AsyncRetrying(), None, (), {})
            streak.attempt_number = self._auth_streak
            return float(self._auth_backoff(streak))
        self._auth_streak = 0
        return float(self._backoff(state))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, WatcherError):
            detail = exc.reason
        else:  # a defect, not the center: say so once, with the traceback
            detail = f"{self.source.name} failed: {type(exc).__name__}: {exc}"
            log.error("%s", detail, exc_info=exc)
        if self._free:
            log.info("%s: %s; reconnecting at once", self.source.name, detail)
            return
        if self._up is False:
            log.debug("%s still unreachable (attempt %d): %s", self.source.name,
                      state.attempt_number, detail)
            return
        self._up = False
        self._down_since = time.monotonic()
        level = logging.ERROR if isinstance(exc, SourceAuthError) else logging.WARNING
        log.log(level, "config center unreachable: %s; the last good state keeps serving, "
                "retrying with backoff", detail, extra={"reason": detail})
        self.sink.connectivity(False, detail)

    def _connected(self, how: str) -> None:
        if self._up is True:
            return
        if self._up is False:
            log.info("%s reachable again after %.1fs", self.source.name,
                     time.monotonic() - self._down_since)
        self._up = True
        self.sink.connectivity(True, f"{self.source.name} ({how})")
