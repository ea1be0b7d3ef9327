"""One etcd watch session: (snapshot) -> watch stream, with liveness and resync timers.

`WatchSession.run()` is retried by EtcdSource.watch. It keeps `next_revision` across runs,
which is what makes a resume lossless and duplicate-free:

* `next_revision is None`: start with a consistent range at R -> `snapshot`, next = R + 1;
* events advance next to (highest mod_revision delivered) + 1; a progress notification
  (sent only once the watcher has caught up) advances it to its header revision + 1;
  the header revision of a catch-up batch does not, since more events may follow it;
* compaction (the server cancels with `compact_revision`) and the resync timer reset next
  to None, so the following run re-reads everything.

Ends by raising: SourceError (retry with backoff, counts as an outage) or _Resync via
`source.resync()` (start the next run at once: resync timer, compaction, or a stream that
broke - a failover rather than an outage, at most once per FREE_RECONNECT_EVERY seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from watcher.core.errors import SourceError, SourceUnavailable
from watcher.sources.base import Sink
from watcher.sources.etcd_gateway import KeyValue, TokenExpired

if TYPE_CHECKING:
    from watcher.sources.etcd import EtcdSource

log = logging.getLogger("watcher.sources.etcd")

#: A broken stream is reconnected at once (a failover, not an outage) at most this often;
#: more frequent breaks go through the backoff, so a flapping member cannot spin us.
FREE_RECONNECT_EVERY = 5.0


class WatchSession:
    def __init__(self, source: EtcdSource, sink: Sink) -> None:
        self.source = source
        self.sink = sink
        self.gateway = source.gateway
        self.next_revision: int | None = None
        self._resync_at = 0.0
        self._last_free_reconnect = -FREE_RECONNECT_EVERY

    async def run(self) -> None:
        if self.next_revision is None:
            changes, revision = await self.source.read_consistent()
            self.source.connected(self.sink)
            self.sink.snapshot(changes)
            self.next_revision = revision + 1
            interval = self.source.options.resync_interval
            self._resync_at = time.monotonic() + interval if interval else 0.0
            log.debug("etcd snapshot of %d documents at revision %d", len(changes), revision)
        async with self.gateway.watch(self.source.prefix, self.next_revision) as stream:
            base = self.gateway.endpoint
            try:
                await self._serve(stream, base)
            except TokenExpired:
                await self.gateway.authenticate_now()
                self.source.resync()
            except SourceError as exc:
                self.gateway.demote(base)
                now = time.monotonic()
                if now - self._last_free_reconnect < FREE_RECONNECT_EVERY:
                    raise
                self._last_free_reconnect = now
                log.info("etcd watch on %s ended (%s); resuming from revision %d elsewhere",
                         base, exc, self.next_revision)
                self.source.resync()

    async def _serve(self, stream: AsyncIterator[dict[str, Any]], base: str) -> None:
        """Consume the stream until it fails, the member stops answering, or resync is due."""
        requested = asyncio.create_task(self.source.resync_requested.wait())
        tasks = {asyncio.create_task(self._consume(stream)),
                 asyncio.create_task(self._keepalive(base)), requested}
        timeout = max(0.0, self._resync_at - time.monotonic()) if self._resync_at else None
        try:
            done, _ = await asyncio.wait(tasks, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if not done or requested in done:
            # A full re-read inside the watch's own order: no older event can follow it.
            self.source.resync_requested.clear()
            log.debug("etcd resync (%s)", "requested" if done else "periodic")
            self.next_revision = None
            self.source.resync()
        for task in done:
            task.result()  # raises the reason the session ended
        raise SourceUnavailable("etcd watch ended")  # pragma: no cover - tasks never return

    async def _consume(self, stream: AsyncIterator[dict[str, Any]]) -> None:
        async for result in stream:
            if result.get("canceled"):
                self._canceled(result)
            if result.get("created"):
                self.source.connected(self.sink)
                continue
            events = result.get("events") or []
            if not events:  # progress notification: everything up to the header is delivered
                revision = int(result.get("header", {}).get("revision", 0))
                self._advance(revision + 1)
                continue
            for event in events:
                kv = KeyValue.from_json(event.get("kv", {}))
                self.sink.changed(self.source._change(kv, deleted=event.get("type") == "DELETE"))
            self._advance(max(int(e.get("kv", {}).get("mod_revision", 0)) for e in events) + 1)

    def _advance(self, revision: int) -> None:
        if self.next_revision is None or revision > self.next_revision:
            self.next_revision = revision

    def _canceled(self, result: dict[str, Any]) -> None:
        compact = int(result.get("compact_revision", 0) or 0)
        reason = str(result.get("cancel_reason", "")) or "no reason given"
        if compact:
            log.warning("etcd compacted past revision %s (now %d); re-reading everything",
                        self.next_revision, compact)
            self.next_revision = None
            self.source.resync()
        if "Unauthenticated" in reason or "auth token" in reason or "user name is empty" in reason:
            raise TokenExpired(reason)
        raise SourceUnavailable(f"etcd refused the watch: {reason}")

    async def _keepalive(self, base: str) -> None:
        interval = self.source.options.keepalive_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.gateway.ping(base)
            except SourceError as exc:
                raise SourceUnavailable(f"etcd member {base} stopped answering: {exc}") from exc
