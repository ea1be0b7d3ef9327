"""The one interface a config center offers the fleet (etcd: fleet/etcd.py, Nacos:
fleet/nacos.py). localdir has none: it is single-host (fleet/settings.py says so).

    liveness     `keep_alive()` joins and stays alive (etcd lease / Nacos ephemeral instance);
                 the member's report rides on it (`report()`), so a dead member's report
                 disappears within the TTL
    members      `members()` reads the live reports; `watch_members()` streams them (leader)
    rollouts     `read_rollout()` (a fresh, linearizable read), `write_rollout()` (compare-
                 and-swap on the version read; `fenced`: only while leading),
                 `watch_rollouts()` streams every record
    documents    `read_document()`: the center's revision and bytes of a model's document
    leadership   `campaign()` returns once this member leads; `leading()` says if it still does
    restarts     `slot(name, limit)`: a distributed semaphore held while restarting; a member
                 that dies releases its slot with its liveness

Errors: SourceUnavailable when the center cannot be reached (callers retry with backoff),
SourceError for refusals. Nothing here decides anything about rollouts (controller.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from watcher.fleet.record import RolloutRecord
from watcher.fleet.report import MemberReport


@dataclass(frozen=True)
class Stored:
    """A record as read, with the version a compare-and-swap write must name."""

    record: RolloutRecord
    version: str


@dataclass(frozen=True)
class Document:
    revision: str
    content: bytes


class FleetBackend(Protocol):
    member_id: str

    async def keep_alive(self, on_change: Callable[[bool], None]) -> None:
        """Join and keep this member alive until cancelled; `on_change(alive)` on every
        edge (a lost lease is re-granted and the report put back). Never returns."""
        ...

    async def report(self, report: MemberReport) -> None:
        """Publish this member's report (bound to its liveness)."""
        ...

    async def members(self) -> dict[str, MemberReport]: ...

    def watch_members(self) -> AsyncIterator[dict[str, MemberReport]]:
        """The live members now, then again after every change, until cancelled."""
        ...

    async def read_rollout(self, model: str) -> Stored | None: ...

    async def write_rollout(self, record: RolloutRecord, version: str | None, *,
                            fenced: bool = False) -> str | None:
        """Write if the stored version is still `version` (None: absent); return the new
        version, or None when someone else wrote first (or, fenced, we do not lead)."""
        ...

    def watch_rollouts(self) -> AsyncIterator[dict[str, Stored]]:
        """Every rollout record now, then again after every change, until cancelled."""
        ...

    async def read_document(self, model: str) -> Document | None: ...

    async def campaign(self) -> None:
        """Return once this member leads the fleet's controller."""
        ...

    def leading(self) -> bool: ...

    def slot(self, name: str, limit: int) -> AbstractAsyncContextManager[None]:
        """Hold one of `limit` slots named `name` (waits while they are all taken)."""
        ...

    async def aclose(self) -> None: ...
