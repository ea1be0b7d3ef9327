"""The one session loop, against an in-memory center with scripted faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from watcher.core.errors import SourceUnavailable
from watcher.fakes.sink import watching
from watcher.fakes.source import MemoryCenter, MemorySource
from watcher.sources.base import Batch, SessionOptions, Snapshot, SourceAuthError


async def test_snapshot_then_changes_in_order() -> None:
    center = MemoryCenter()
    center.put("a", b"1")
    async with watching(MemorySource(center)) as w:
        await w.sink.until(lambda: w.sink.snapshots)
        assert list(w.sink.snapshots[0]) == ["a"]
        center.put("b", b"2")
        center.put("a", b"3")
        center.delete("b")
        await w.sink.until(lambda: len(w.sink.changes) == 3)
        assert w.sink.revisions() == [("b", "2"), ("a", "3"), ("b", "deleted")]
        assert w.sink.state() == {"a": ("3", b"3")}
        assert w.sink.edges == [(True, "memory (snapshot)")]


async def test_outage_is_one_edge_and_a_resumable_source_resumes(
        caplog: pytest.LogCaptureFixture) -> None:
    center = MemoryCenter()
    source = MemorySource(center)
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.snapshots)
        center.put("a", b"1")
        await w.sink.until(lambda: w.sink.changes)
        # A free reconnect first (the stream was up), then the outage: one edge down.
        center.down = "connection refused"
        await w.sink.until(lambda: (False, "connection refused") in w.sink.edges)
        center.put("b", b"made while unreachable")  # the stream will resume after it
        center.down = None
        await w.sink.until(lambda: w.sink.state().get("b") is not None, what="b after resume")
        assert source.snapshots == 1  # resumed from the cursor, no re-read
        assert [up for up, _ in w.sink.edges] == [True, False, True]
        assert w.sink.revisions() == [("a", "1"), ("b", "2")]  # nothing twice
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connection refused" in warnings[0].getMessage()


async def test_a_source_that_cannot_resume_takes_a_fresh_snapshot() -> None:
    center = MemoryCenter()
    center.put("a", b"1")
    source = MemorySource(center, resumable=False)
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.snapshots)
        center.down = "gone"
        await w.sink.until(lambda: (False, "gone") in w.sink.edges)
        center.put("a", b"2")
        center.down = None
        await w.sink.until(lambda: len(w.sink.snapshots) == 2)
        assert w.sink.snapshots[1]["a"].content == b"2"
        assert not w.sink.changes


async def test_compaction_and_a_requested_resync_re_read_everything() -> None:
    center = MemoryCenter()
    center.put("a", b"1")
    source = MemorySource(center)
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.snapshots)
        w.session.request_resync()
        await w.sink.until(lambda: len(w.sink.snapshots) == 2)
        center.down = "cut"
        await w.sink.until(lambda: (False, "cut") in w.sink.edges)
        center.put("a", b"2")
        center.compact()
        center.down = None
        await w.sink.until(lambda: len(w.sink.snapshots) == 3, what="a snapshot after compaction")
        assert w.sink.state() == {"a": ("2", b"2")}


async def test_periodic_resync() -> None:
    center = MemoryCenter()
    opts = SessionOptions(check_interval=0.05, max_backoff=0.1, resync_interval=0.1)
    source = MemorySource(center, options=opts)
    async with watching(source) as w:
        await w.sink.until(lambda: len(w.sink.snapshots) >= 3)


class Broken(MemorySource):
    """A source with a defect: its stream raises something that is no WatcherError."""

    async def changes(self, cursor: int) -> AsyncIterator[Batch]:
        raise KeyError("defect")
        yield Batch([], cursor)  # pragma: no cover - makes this an async generator


async def test_a_defect_in_a_source_is_an_outage_not_the_end(caplog: pytest.LogCaptureFixture) -> None:
    center = MemoryCenter()
    async with watching(Broken(center)) as w:
        await w.sink.until(lambda: any(not up for up, _ in w.sink.edges))
        assert not w.task.done()
        assert "memory failed: KeyError: 'defect'" in w.sink.edges[-1][1]
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)


class Refusing(MemorySource):
    attempts = 0

    async def snapshot(self) -> Snapshot:
        self.attempts += 1
        self.center._wrote.set()  # wakes the test
        raise SourceAuthError("credentials refused")


async def test_refused_credentials_are_one_error(caplog: pytest.LogCaptureFixture) -> None:
    source = Refusing(MemoryCenter(), options=SessionOptions(max_backoff=0.01,
                                                             auth_retry_interval=0.01))
    async with watching(source) as w, asyncio.timeout(10):
        while source.attempts < 4:  # several retries, still one edge and one ERROR
            source.center._wrote.clear()
            await source.center._wrote.wait()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(";")[0] for r in errors] == [
        "config center unreachable: credentials refused"]
    assert w.sink.edges == [(False, "credentials refused")]


def test_refused_credentials_are_no_unavailability() -> None:
    assert not issubclass(SourceAuthError, SourceUnavailable)  # publish/once: exit 1, not 4
