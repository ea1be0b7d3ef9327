"""The source contract: the runner owns the loop, sources only answer (confd's shape).

A source knows its own protocol: how to list everything consistently, how to watch from a
revision, how to reconnect. It never decides whether to apply anything: it hands `Change`s to
a `Sink` (the reconciler), whose methods never block, so an SDK thread or listener that calls
them returns at once.

Revisions are the center's own, as strings: etcd `mod_revision`, the Nacos content md5, a
content hash for files. The reconciler compares them for equality only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Change:
    """One document's state at one revision. `content is None` means the key was deleted."""

    key: str
    revision: str
    content: bytes | None
    observed_at: float = field(default_factory=time.time)

    @property
    def deleted(self) -> bool:
        return self.content is None


class Sink(Protocol):
    """Where a source delivers. Every method is non-blocking and thread-safe."""

    def changed(self, change: Change) -> None:
        """One key changed (or was deleted)."""

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        """The complete set of documents at one point in time: keys absent are deleted."""

    def connectivity(self, up: bool, detail: str = "") -> None:
        """The source lost or regained its config center (report edges, not every retry)."""


@runtime_checkable
class Source(Protocol):
    name: str

    async def read_all(self) -> dict[str, Change]:
        """One consistent read of every document; SourceUnavailable when unreachable."""
        ...

    async def watch(self, sink: Sink) -> None:
        """Deliver an initial `snapshot`, then changes, until cancelled.

        Reconnects by itself (with backoff) and resumes without loss; after anything that
        could have lost events (compaction, long outage) it delivers a fresh `snapshot`.
        Returns only when cancelled; never raises for a transient outage.
        """
        ...

    async def aclose(self) -> None: ...

    # Optional: `request_resync() -> None`. A source whose watch is ordered (etcd) offers it so
    # that an on-demand re-read (webhook, operator) happens inside the watch's own order;
    # without it the reconciler calls `read_all()` itself.


@runtime_checkable
class Publisher(Protocol):
    """The writing side, for `model-watcher publish` (etcd, Nacos, local directory)."""

    async def publish(self, key: str, content: bytes, *, if_revision: str | None = None) -> str:
        """Write `content` under `key`; return the new revision.

        With `if_revision`, the write happens only if the key's current revision equals it
        (compare-and-swap; "0" or "" for "must not exist"); otherwise ConflictError.
        """
        ...

    async def aclose(self) -> None: ...
