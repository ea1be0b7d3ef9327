"""The source contract: a source only fetches; one session (sources/session.py) owns the loop.

confd's `StoreClient` and consul-template's `Dependency.Fetch` show the shape: a backend
answers two questions and decides nothing.

* `snapshot()`: every document present now, plus a cursor (the center's position at that
  read: etcd's revision; a generation number where the center has no position);
* `changes(cursor)`: the changes after `cursor`, as batches each carrying the cursor after
  it, for as long as the stream lasts.

A source raises `SourceUnavailable` when it cannot reach its center (`SourceAuthError` when
the center refuses its credentials) and `ResyncNeeded` when it cannot go on from the cursor
(etcd compacted past it, inotify dropped events). It never retries, sleeps, reports
connectivity or schedules a re-read: the session does all of that, the same way for every
source. Adding a config center is one module implementing `Source` (plus `Publisher` for
`model-watcher publish`) and one line in the plug-in registry (docs/architecture.md).

Revisions are the center's own, as strings (etcd `mod_revision`, the Nacos content md5, a
content hash for files); the reconciler compares them for equality only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.errors import SourceError

#: The revision every source reports for a deleted document.
DELETED = "deleted"


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

    @classmethod
    def deletion(cls, key: str, revision: str = DELETED) -> Change:
        """A delete; at the center's revision of the delete where it has one (etcd)."""
        return cls(key, revision, None)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every document present at one point in time (absent keys are deleted) and the cursor
    to ask for the changes after it."""

    documents: Mapping[str, Change]
    cursor: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes in the center's order and the cursor after them. A batch without changes
    only moves the cursor (etcd's progress notification) or says the stream is established."""

    changes: Sequence[Change]
    cursor: int


class ResyncNeeded(SourceError):
    """The source cannot continue from the cursor: the session takes a fresh snapshot now."""


class SourceAuthError(SourceError):
    """The center refuses the credentials: an outage an operator must fix (logged as ERROR,
    retried with the longer `auth_retry_interval` backoff); not "unavailable" (exit 4)."""


class SessionOptions(BaseModel):
    """Options every source has; the session reads them. Sources subclass this with their
    own fields (and may change the defaults)."""

    model_config = ConfigDict(extra="forbid")

    resync_interval: float = Field(60.0, ge=0, description="periodic full re-read; 0 = off")
    check_interval: float = Field(5.0, gt=0, description="liveness check of an idle stream")
    max_backoff: float = Field(10.0, gt=0, description="cap of the reconnect backoff")
    auth_retry_interval: float = Field(
        60.0, gt=0, description="cap of the backoff while the center refuses the credentials")


@runtime_checkable
class Source(Protocol):
    name: str
    options: SessionOptions
    #: True when `changes(cursor)` after an outage delivers everything since `cursor` (etcd);
    #: False when only a fresh snapshot can tell what happened meanwhile (Nacos, files).
    resumable: ClassVar[bool]

    async def snapshot(self) -> Snapshot:
        """One consistent read of every document. SourceUnavailable when unreachable."""
        ...

    def changes(self, cursor: int) -> AsyncIterator[Batch]:
        """Changes after `cursor`, until the stream breaks (SourceUnavailable) or cannot
        go on (ResyncNeeded). Cancelled by the session; never sleeps between retries."""
        ...

    async def check(self) -> None:
        """Raise SourceUnavailable if the stream's connection is dead (called while idle)."""
        ...

    async def aclose(self) -> None: ...


class Sink(Protocol):
    """Where the session delivers, on the event loop; every method returns at once."""

    def changed(self, change: Change) -> None:
        """One key changed (or was deleted)."""

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        """The complete set of documents at one point in time: keys absent are deleted."""

    def connectivity(self, up: bool, detail: str = "") -> None:
        """The source lost or regained its config center (edges only, not every retry)."""


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
