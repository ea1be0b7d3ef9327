"""A recording `Sink` and a context manager that runs a real `SourceSession` into it.

Tests wait on what was delivered (`until`), never on a fixed sleep: every delivery wakes
the waiters, and `until` re-checks its predicate after each one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from watcher.sources.base import Change, Source
from watcher.sources.session import SourceSession


@dataclass
class RecordingSink:
    """Records snapshots, changes and connectivity edges; `state()` folds them into
    key -> (revision, content) as a reconciler would see the center."""

    snapshots: list[dict[str, Change]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    edges: list[tuple[bool, str]] = field(default_factory=list)
    #: Everything in order: ("snapshot", dict) | ("changed", Change) | ("up"|"down", detail)
    events: list[tuple[str, object]] = field(default_factory=list)
    _state: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    _delivered: asyncio.Event = field(default_factory=asyncio.Event)

    def changed(self, change: Change) -> None:
        self.changes.append(change)
        if change.content is None:
            self._state.pop(change.key, None)
        else:
            self._state[change.key] = (change.revision, change.content)
        self.events.append(("changed", change))
        self._delivered.set()

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        self.snapshots.append(dict(changes))
        self._state = {k: (c.revision, c.content) for k, c in changes.items()
                       if c.content is not None}
        self.events.append(("snapshot", dict(changes)))
        self._delivered.set()

    def connectivity(self, up: bool, detail: str = "") -> None:
        self.edges.append((up, detail))
        self.events.append(("up" if up else "down", detail))
        self._delivered.set()

    def state(self) -> dict[str, tuple[str, bytes]]:
        return dict(self._state)

    def of(self, kind: str) -> list[object]:
        """The payloads of one kind of event, in order."""
        return [value for k, value in self.events if k == kind]

    def revisions(self) -> list[tuple[str, str]]:
        """(key, revision) of every change delivered, in order."""
        return [(c.key, c.revision) for c in self.changes]

    async def until(self, predicate: Callable[[], object], timeout: float = 10.0,  # noqa: ASYNC109
                    what: str = "the expected delivery") -> None:
        """Return once `predicate()` holds, re-checked after each delivery."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._delivered.clear()
                    await self._delivered.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; "
                                 f"changes={self.revisions()} edges={self.edges}") from None


@dataclass
class Watching:
    """A source running in a real session into a RecordingSink."""

    source: Source
    session: SourceSession
    sink: RecordingSink
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def watching(source: Source, *, close: bool = True) -> AsyncIterator[Watching]:
    """Run `source` in a SourceSession for the block; cancel it (and close the source)
    afterwards. A session that died is re-raised here, so no failure goes unseen."""
    sink = RecordingSink()
    session = SourceSession(source, sink)
    task = asyncio.create_task(session.run(), name=f"session:{source.name}")
    try:
        yield Watching(source, session, sink, task)
    finally:
        if task.done():
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if close:
            await source.aclose()
