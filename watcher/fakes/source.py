"""An in-memory config center and a `Source`/`Publisher` over it, with scripted faults.

`MemoryCenter` keeps documents with an etcd-like global revision and a compaction point;
`MemorySource` reads it. Faults are explicit: `center.down = "reason"` makes every call
raise SourceUnavailable until cleared; `center.compact()` makes a resume from an older
cursor raise ResyncNeeded. With `resumable=False` the source behaves like Nacos or files
(after an outage only a snapshot tells what happened).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from watcher.core.errors import ConflictError, SourceUnavailable
from watcher.sources.base import Batch, Change, ResyncNeeded, SessionOptions, Snapshot


@dataclass
class MemoryCenter:
    """Documents by key, each with the global revision of its last write."""

    documents: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    log: list[tuple[int, Change]] = field(default_factory=list)
    revision: int = 0
    compacted: int = 0
    down: str | None = None
    _wrote: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, key: str, content: bytes) -> int:
        self.revision += 1
        self.documents[key] = (self.revision, content)
        self.log.append((self.revision, Change(key, str(self.revision), content)))
        self._wrote.set()
        return self.revision

    def delete(self, key: str) -> int:
        self.revision += 1
        self.documents.pop(key, None)
        self.log.append((self.revision, Change.deletion(key)))
        self._wrote.set()
        return self.revision

    def compact(self) -> None:
        self.compacted = self.revision
        self.log = []

    def check(self) -> None:
        if self.down is not None:
            raise SourceUnavailable(self.down)


class MemorySource:
    """A Source (and Publisher) over a MemoryCenter; `name` is "memory"."""

    name = "memory"

    def __init__(self, center: MemoryCenter, *, resumable: bool = True,
                 options: SessionOptions | None = None) -> None:
        self.center = center
        self.resumable = resumable
        self.options = options or SessionOptions(check_interval=0.05, max_backoff=0.1,
                                                 auth_retry_interval=0.1, resync_interval=0)
        self.snapshots = 0

    async def snapshot(self) -> Snapshot:
        self.center.check()
        self.snapshots += 1
        docs = {k: Change(k, str(rev), content) for k, (rev, content) in self.center.documents.items()}
        return Snapshot(docs, self.center.revision)

    async def changes(self, cursor: int) -> AsyncIterator[Batch]:
        while True:
            self.center.check()
            if cursor < self.center.compacted:
                raise ResyncNeeded(f"compacted past {cursor}")
            news = [c for rev, c in self.center.log if rev > cursor]
            if news:
                cursor = max(rev for rev, _ in self.center.log)
                yield Batch(news, cursor)
            self.center._wrote.clear()
            await self.center._wrote.wait()

    async def check(self) -> None:
        self.center.check()

    async def publish(self, key: str, content: bytes, *, if_revision: str | None = None) -> str:
        self.center.check()
        if if_revision is not None:
            have = str(self.center.documents[key][0]) if key in self.center.documents else ""
            if have != ("" if if_revision in ("", "0") else if_revision):
                raise ConflictError(f"{key}: revision is {have or 'absent'}, not {if_revision}")
        return str(self.center.put(key, content))

    async def aclose(self) -> None:
        return None
