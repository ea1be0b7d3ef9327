from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from watcher.core.errors import ConflictError, SourceUnavailable
from watcher.sources.base import Change
from watcher.sources.localdir import LocalDirOptions, LocalDirSource, revision_of


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.snapshots: list[dict[str, Change]] = []
        self.links: list[bool] = []
        self.event = asyncio.Event()

    def changed(self, change: Change) -> None:
        self.changes.append(change)
        self.event.set()

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        self.snapshots.append(dict(changes))
        self.event.set()

    def connectivity(self, up: bool, detail: str = "") -> None:
        self.links.append(up)

    async def until(self, pred: object, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():  # type: ignore[operator]
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, Recorder]]:
    (tmp_path / "a.yaml").write_bytes(b"name: a\n")
    src = LocalDirSource(LocalDirOptions(path=tmp_path, resync_interval=0))
    rec = Recorder()
    task = asyncio.create_task(src.watch(rec))
    await rec.until(lambda: rec.snapshots)
    yield tmp_path, rec
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_initial_snapshot_has_every_document(watched: tuple[Path, Recorder]) -> None:
    _, rec = watched
    assert list(rec.snapshots[0]) == ["a"]
    assert rec.snapshots[0]["a"].revision == revision_of(b"name: a\n")


async def test_save_by_rename_is_one_change(watched: tuple[Path, Recorder]) -> None:
    root, rec = watched
    tmp = root / ".a.yaml.swp"
    tmp.write_bytes(b"name: a\nversion: v2\n")
    os.replace(tmp, root / "a.yaml")
    await rec.until(lambda: rec.changes)
    await asyncio.sleep(0.2)
    assert [c.content for c in rec.changes] == [b"name: a\nversion: v2\n"]


async def test_truncate_then_write_ends_in_the_full_content(watched: tuple[Path, Recorder]) -> None:
    root, rec = watched
    with open(root / "a.yaml", "wb") as f:
        f.truncate(0)
        f.flush()
        f.write(b"name: a\nversion: v3\n")
    await rec.until(lambda: rec.changes and rec.changes[-1].content == b"name: a\nversion: v3\n")


async def test_identical_rewrite_is_not_a_change(watched: tuple[Path, Recorder]) -> None:
    root, rec = watched
    (root / "a.yaml").write_bytes(b"name: a\n")
    (root / "b.json").write_bytes(b"{}")
    await rec.until(lambda: rec.changes)
    await asyncio.sleep(0.2)
    assert [c.key for c in rec.changes] == ["b"]


async def test_delete_is_reported_as_a_delete(watched: tuple[Path, Recorder]) -> None:
    root, rec = watched
    (root / "a.yaml").unlink()
    await rec.until(lambda: rec.changes)
    assert rec.changes[0].deleted and rec.changes[0].key == "a"


async def test_swap_and_other_files_are_ignored(watched: tuple[Path, Recorder]) -> None:
    root, rec = watched
    for name in (".a.yaml.swp", "a.yaml~", "notes.txt", ".hidden.yaml"):
        (root / name).write_bytes(b"x")
    (root / "c.yml").write_bytes(b"name: c\n")
    await rec.until(lambda: rec.changes)
    await asyncio.sleep(0.2)
    assert [c.key for c in rec.changes] == ["c"]


async def test_publish_is_atomic_and_compare_and_swap(tmp_path: Path) -> None:
    src = LocalDirSource(LocalDirOptions(path=tmp_path))
    rev = await src.publish("m", b"name: m\n", if_revision="0")
    assert rev == revision_of(b"name: m\n") and (tmp_path / "m.yaml").read_bytes() == b"name: m\n"
    with pytest.raises(ConflictError, match="not 0"):
        await src.publish("m", b"name: m\nx: 1\n", if_revision="0")
    with pytest.raises(ConflictError):
        await src.publish("m", b"name: m\nx: 1\n", if_revision="stale")
    await src.publish("m", b"name: m\nx: 1\n", if_revision=rev)
    assert list(tmp_path.iterdir()) == [tmp_path / "m.yaml"]


async def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="does not exist"):
        await LocalDirSource(LocalDirOptions(path=tmp_path / "nope")).read_all()


async def test_an_inotify_overflow_triggers_a_full_reread(watched: tuple[Path, Recorder]) -> None:
    import logging

    from watcher.sources.localdir import OVERFLOW_LOGGER

    _, rec = watched
    assert len(rec.snapshots) == 1  # resync_interval=0: no periodic re-reads
    # What watchdog logs (from its inotify thread) when the kernel dropped events.
    logging.getLogger(OVERFLOW_LOGGER).warning("Inotify queue overflowed; filesystem events were lost")
    await rec.until(lambda: len(rec.snapshots) == 2)
    assert list(rec.snapshots[1]) == ["a"]
