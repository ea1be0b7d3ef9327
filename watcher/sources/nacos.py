"""Nacos source and publisher: one config (data id) per model, revision = content md5.

Fetching only (sources/base.py); the session retries, reports and re-reads:

* `snapshot()` discovers the data ids (the listed `data_ids`, or the group's configs matching
  `data_id_pattern`), adds the SDK listeners, then reads every config. Pushes queued before
  the read are dropped (the read covers them); pushes that arrive during it follow it;
* listener discipline: the SDK runs listeners inline under a per-config lock, so ours only
  enqueues `(data id, content)` and returns; `changes()` delivers. Listeners are added and
  never removed, and only from the daemon's task, never from inside a listener;
* `changes()` delivers pushes (dropping those that repeat the revision last delivered) and,
  in pattern mode, re-lists every `discovery_interval`: new data ids get a listener and a
  read, data ids listed no more are deletes;
* the SDK reconnects by itself, but pushes made while it was away are not replayed, so the
  source is not `resumable`: after an outage the session takes a fresh snapshot.
  `check()` asks the SDK whether its connection is up;
* refused credentials are a `NacosAuthError` (a SourceAuthError): one ERROR per outage,
  re-tried with the long backoff;
* a deleted config (a push or read of nothing) is a deletion.

Publisher: `publish(name, content, if_revision=md5)` uses Nacos's CAS (`casMd5`); a refusal
is re-checked against the current md5 and raised as ConflictError naming both. `""`/`"0"`
means "must not exist" (checked by a read: Nacos has no create-only write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, ClassVar

from watcher.core.errors import ConflictError, DocumentError, SourceError, SourceUnavailable
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Batch, Change, ResyncNeeded, Snapshot
from watcher.sources.nacos_client import NacosAuthError, NacosClient
from watcher.sources.nacos_options import NacosOptions, content_md5, key_of

log = logging.getLogger("watcher.sources.nacos")
READ_CONCURRENCY = 8


class NacosSource:
    """Watches (and publishes) model documents kept as configs in one Nacos group."""

    name = "nacos"
    resumable: ClassVar[bool] = False

    def __init__(self, options: NacosOptions, ctx: PluginContext) -> None:
        self.options = options
        self._log = ctx.logger.getChild("nacos") if ctx.logger else log
        self.client = NacosClient(options, ctx.state_dir, self._log)
        self._pushes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._listening: set[str] = set()
        self._ids: dict[str, str] = {}  # key -> data id
        self._delivered: dict[str, str] = {}  # key -> revision last handed to the sink
        self._generation = 0
        self._warned_dupes: set[str] = set()

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> NacosSource:
        return cls(parse_options(NacosOptions, options, "source"), ctx)

    # -- reading -------------------------------------------------------------------------
    def _change(self, data_id: str, content: str | None) -> Change:
        if not content:
            return Change.deletion(key_of(data_id))
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

    async def snapshot(self) -> Snapshot:
        await self.client.service()
        self._ids = await self._discover()
        await self._listen(self._ids.values())
        while not self._pushes.empty():  # the read below covers what they say
            self._pushes.get_nowait()
        read = await self._read(self._ids.values())
        self._delivered = {k: c.revision for k, c in read.items()}
        self._generation += 1
        return Snapshot({k: c for k, c in read.items() if not c.deleted}, self._generation)

    async def _on_push(self, tenant: str, group: str, data_id: str, content: str) -> None:
        """The SDK listener: enqueue and return (runs inline under the SDK's lock)."""
        self._pushes.put_nowait((data_id, content))

    async def changes(self, cursor: int) -> AsyncIterator[Batch]:
        if cursor != self._generation:
            raise ResyncNeeded("the listeners belong to another snapshot")
        interval = self.options.discovery_interval if self.options.pattern is not None else None
        discover_at = time.monotonic() + interval if interval else None
        while True:
            wait = max(0.0, discover_at - time.monotonic()) if discover_at is not None else None
            batch: list[Change] = []
            with contextlib.suppress(TimeoutError):
                batch += self._push(*await asyncio.wait_for(self._pushes.get(), wait))
            while not self._pushes.empty():
                batch += self._push(*self._pushes.get_nowait())
            if interval and discover_at is not None and time.monotonic() >= discover_at:
                batch += await self._rediscover()
                discover_at = time.monotonic() + interval
            if batch:
                yield Batch(batch, cursor)

    async def check(self) -> None:
        if not await self.client.healthy():
            raise SourceUnavailable(f"Nacos unreachable at {self.client.where}")

    def _push(self, data_id: str, content: str) -> list[Change]:
        if self._ids.get(key_of(data_id)) != data_id:
            return []
        return self._fresh(self._change(data_id, content))

    def _fresh(self, change: Change) -> list[Change]:
        """[change] unless it repeats the revision last delivered (the SDK's first listen
        round re-pushes what the snapshot just read)."""
        if self._delivered.get(change.key) == change.revision:
            return []
        self._delivered[change.key] = change.revision
        return [change]

    async def _listen(self, data_ids: Iterable[str]) -> None:
        for data_id in data_ids:
            if data_id not in self._listening:
                await self.client.listen(data_id, self._on_push)
                self._listening.add(data_id)

    async def _rediscover(self) -> list[Change]:
        ids = await self._discover()
        new = {k: d for k, d in ids.items() if self._ids.get(k) != d}
        gone = set(self._ids) - set(ids)
        if not new and not gone:
            return []
        await self._listen(new.values())
        self._ids = ids
        out: list[Change] = []
        for change in (await self._read(new.values())).values():
            if not change.deleted:  # listed but not readable yet: its listener will push it
                out += self._fresh(change)
        for key in sorted(gone):  # listed no more: deleted (its listener stays, ignored)
            out += self._fresh(Change.deletion(key))
        return out

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
