"""Nacos source and publisher: one config (data id) per model, revision = content md5.

Watch contract (sources/base.Source):

* a session discovers the data ids (the listed `data_ids`, or the group's configs matching
  `data_id_pattern`), adds the SDK listeners, then reads every config and delivers a
  `snapshot`; pushes that arrive meanwhile are delivered after it, in order, so a snapshot
  never overtakes a newer push;
* listener discipline: the SDK runs listeners inline under a per-config lock, so ours only
  enqueues `(data id, content)` and returns; this task delivers. Listeners are added and
  never removed, and only from this task, never from inside a listener;
* pattern mode re-lists every `discovery_interval`; new data ids get a listener and a read;
* outages: the SDK reconnects by itself; this task checks the connection every
  `check_interval`. Lost -> `connectivity(False)` once per outage; back -> a fresh session
  (full re-read, snapshot), so nothing published meanwhile is missed. Every
  `resync_interval` a fresh session catches anything a push could have missed;
* refused credentials: one ERROR and `connectivity(False)` naming them, then quiet re-tries
  backing off from 1 s to `auth_retry_interval` (a Nacos that is still starting refuses good
  credentials for a moment), never a retry storm;
* a deleted config (a push or read of nothing) is a `Change(key, "deleted", None)`.

Publisher: `publish(name, content, if_revision=md5)` uses Nacos's CAS (`casMd5`); a refusal
is re-checked against the current md5 and raised as ConflictError naming both. `""`/`"0"`
means "must not exist" (checked by a read: Nacos has no create-only write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from watcher.core.errors import ConflictError, DocumentError, SourceError, SourceUnavailable
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Change, Sink
from watcher.sources.nacos_client import NacosAuthError, NacosClient
from watcher.sources.nacos_options import DELETED, NacosOptions, content_md5, key_of

log = logging.getLogger("watcher.sources.nacos")
READ_CONCURRENCY = 8


class _Resync(Exception):  # control flow, not an error
    """Start a fresh session (full re-read) at once."""


class NacosSource:
    """Watches (and publishes) model documents kept as configs in one Nacos group."""

    name = "nacos"

    def __init__(self, options: NacosOptions, ctx: PluginContext) -> None:
        self.options = options
        self._log = ctx.logger.getChild("nacos") if ctx.logger else log
        self.client = NacosClient(options, ctx.state_dir, self._log)
        self._pushes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._listening: set[str] = set()
        self._ids: dict[str, str] = {}  # key -> data id
        self._delivered: dict[str, str] = {}  # key -> revision last handed to the sink
        self._up: bool | None = None
        self._down_since = 0.0
        self._reported_auth = False
        self._warned_dupes: set[str] = set()

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> NacosSource:
        return cls(parse_options(NacosOptions, options, "source"), ctx)

    # -- reading -------------------------------------------------------------------------
    def _change(self, data_id: str, content: str | None) -> Change:
        if not content:
            return Change(key_of(data_id), DELETED, None)
        return Change(key_of(data_id), content_md5(content), content.encode("utf-8"))

    async def _discover(self) -> dict[str, str]:
        """key -> data id of every document to watch now."""
        if self.options.data_ids is not None:
            found: Iterable[str] = self.options.data_ids
        else:
            found = [d for d in await self.client.list_data_ids() if self.options.matches(d)]
        ids: dict[str, str] = {}
        for data_id in sorted(found):
            key = key_of(data_id)
            if key in ids:
                if data_id not in self._warned_dupes:
                    self._warned_dupes.add(data_id)
                    self._log.warning("Nacos data id %r ignored: %r already holds model %r",
                                      data_id, ids[key], key)
                continue
            ids[key] = data_id
        return ids

    async def _read(self, data_ids: Iterable[str]) -> dict[str, Change]:
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(data_id: str) -> tuple[str, str | None]:
            async with gate:
                return data_id, await self.client.get(data_id)

        results = await asyncio.gather(*(one(d) for d in data_ids))
        return {key_of(d): self._change(d, content) for d, content in results}

    async def read_all(self) -> dict[str, Change]:
        """One full read; absent configs are left out. SourceUnavailable when unreachable."""
        ids = await self._discover()
        changes = await self._read(ids.values())
        return {k: c for k, c in changes.items() if not c.deleted}

    # -- watching ------------------------------------------------------------------------
    async def _on_push(self, tenant: str, group: str, data_id: str, content: str) -> None:
        """The SDK listener: enqueue and return (runs inline under the SDK's lock)."""
        self._pushes.put_nowait((data_id, content))

    async def watch(self, sink: Sink) -> None:
        backoff = 0.2
        auth_backoff = 1.0
        while True:
            try:
                await self._session(sink)
            except _Resync:
                backoff, auth_backoff = 0.2, 1.0
                continue
            except NacosAuthError as exc:
                # A starting Nacos refuses good credentials for a moment, so the first
                # re-tries come soon; then rarely: one ERROR, never a retry storm.
                self._auth_refused(sink, exc)
                await asyncio.sleep(auth_backoff)
                auth_backoff = min(auth_backoff * 2, self.options.auth_retry_interval)
            except SourceError as exc:
                self._down(sink, exc.reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.options.max_backoff)

    async def _session(self, sink: Sink) -> None:
        """Discover, listen, snapshot, then deliver pushes until a resync is due."""
        await self.client.service()
        self._ids = await self._discover()
        await self._listen(self._ids.values())
        snapshot = await self._read(self._ids.values())
        self._delivered = {k: c.revision for k, c in snapshot.items()}
        sink.snapshot({k: c for k, c in snapshot.items() if not c.deleted})
        self._connected(sink)
        now = time.monotonic()
        resync_at = now + self.options.resync_interval if self.options.resync_interval else None
        discover_at = now + self.options.discovery_interval
        while True:
            await self._deliver_pushes(sink, self.options.check_interval)
            if not await self.client.healthy():
                raise SourceUnavailable(f"Nacos unreachable at {self.client.where}")
            now = time.monotonic()
            if self.options.pattern is not None and now >= discover_at:
                await self._rediscover(sink)
                discover_at = now + self.options.discovery_interval
            if resync_at is not None and now >= resync_at:
                self._log.debug("periodic full re-read of Nacos group %s", self.options.group)
                raise _Resync

    async def _deliver_pushes(self, sink: Sink, wait: float) -> None:
        """Hand queued pushes to the sink, waiting up to `wait` seconds for the first."""
        with contextlib.suppress(TimeoutError):
            data_id, content = await asyncio.wait_for(self._pushes.get(), wait)
            self._push(sink, data_id, content)
        while not self._pushes.empty():
            self._push(sink, *self._pushes.get_nowait())

    def _push(self, sink: Sink, data_id: str, content: str) -> None:
        if self._ids.get(key_of(data_id)) == data_id:
            self._deliver(sink, self._change(data_id, content))

    def _deliver(self, sink: Sink, change: Change) -> None:
        """Hand over a change unless the sink already has that revision (drop no-ops early:
        the SDK's first listen round re-pushes what the snapshot just delivered)."""
        if self._delivered.get(change.key) != change.revision:
            self._delivered[change.key] = change.revision
            sink.changed(change)

    async def _listen(self, data_ids: Iterable[str]) -> None:
        for data_id in data_ids:
            if data_id not in self._listening:
                await self.client.listen(data_id, self._on_push)
                self._listening.add(data_id)

    async def _rediscover(self, sink: Sink) -> None:
        ids = await self._discover()
        new = {k: d for k, d in ids.items() if self._ids.get(k) != d}
        gone = set(self._ids) - set(ids)
        if not new and not gone:
            return
        await self._listen(new.values())
        self._ids = ids
        for change in (await self._read(new.values())).values():
            if not change.deleted:  # listed but not readable yet: its listener will push it
                self._deliver(sink, change)
        for key in gone:  # listed no more: deleted (its listener stays, ignored)
            self._deliver(sink, Change(key, DELETED, None))

    # -- connectivity edges ------------------------------------------------------------------
    def _down(self, sink: Sink, detail: str) -> None:
        if self._up is not False:
            self._up = False
            self._down_since = time.monotonic()
            # INFO: the reconciler logs the one WARNING per outage when told below
            self._log.info("%s (retrying with backoff)", detail)
            sink.connectivity(False, detail)
        else:
            self._log.debug("Nacos still unreachable: %s", detail)

    def _auth_refused(self, sink: Sink, exc: NacosAuthError) -> None:
        if not self._reported_auth:
            self._reported_auth = True
            self._log.error("%s; re-trying with backoff up to every %.0fs", exc.reason,
                            self.options.auth_retry_interval)
        else:
            self._log.debug("credentials still refused: %s", exc.reason)
        if self._up is not False:
            self._up = False
            self._down_since = time.monotonic()
            sink.connectivity(False, exc.reason)

    def _connected(self, sink: Sink) -> None:
        if self._up is False:
            self._log.info("Nacos reachable again at %s after %.1fs", self.client.where,
                           time.monotonic() - self._down_since)
        self._up = True
        self._reported_auth = False
        sink.connectivity(True, f"nacos {self.client.where} group {self.options.group}")

    # -- publishing ----------------------------------------------------------------------
    async def publish(self, key: str, content: bytes, *, if_revision: str | None = None) -> str:
        data_id = self.options.data_id_for(key)
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{key}: Nacos configs are text; the document is not UTF-8") from exc
        if if_revision is not None and if_revision.strip() in ("", "0"):
            current = await self.client.get(data_id)
            if current is not None:
                raise ConflictError(f"{data_id!r} exists in Nacos at md5 {content_md5(current)}, "
                                    "but --if-md5 expected it not to exist; re-read and retry")
            if_revision = None
        if if_revision is None:
            await self.client.publish(data_id, text)
            return content_md5(text)
        expected = if_revision.strip()
        if await self.client.get(data_id) is None:  # Nacos's CAS would create it
            raise ConflictError(f"{data_id!r} does not exist in Nacos, but --if-md5 expected "
                                f"{expected}: someone else deleted it meanwhile")
        try:
            await self.client.publish(data_id, text, cas_md5=expected)
        except (SourceUnavailable, NacosAuthError):
            raise
        except SourceError:
            current = await self._md5_other_than(data_id, expected)
            if current != expected:
                found = f"is at md5 {current}" if current else "does not exist"
                raise ConflictError(f"{data_id!r} {found} in Nacos, but --if-md5 expected "
                                    f"{expected}: someone else published meanwhile; "
                                    "re-read and retry") from None
            raise  # refused for another reason than the md5
        return content_md5(text)

    async def _md5_other_than(self, data_id: str, expected: str, settle: float = 2.0) -> str | None:
        """The current md5 (None: absent), re-read for up to `settle` s while it equals
        `expected`: Nacos applies a write to its read side a moment after accepting it."""
        deadline = time.monotonic() + settle
        while True:
            content = await self.client.get(data_id)
            current = content_md5(content) if content is not None else None
            if current != expected or time.monotonic() >= deadline:
                return current
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        await self.client.aclose()
