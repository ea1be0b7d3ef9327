from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from watcher.core.errors import ConflictError, SourceUnavailable
from watcher.fakes.sink import Watching, watching
from watcher.sources.base import Change
from watcher.sources.localdir import LocalDirOptions, LocalDirSource, revision_of


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, Watching]]:
    (tmp_path / "a.yaml").write_bytes(b"name: a\n")
    src = LocalDirSource(LocalDirOptions(path=tmp_path, resync_interval=0, check_interval=0.1,
                                         max_backoff=0.1))
    async with watching(src) as w:
        await w.sink.until(lambda: w.sink.snapshots)
        yield tmp_path, w


async def barrier(root: Path, w: Watching) -> list[Change]:
    """Everything delivered before a sentinel written now: names are taken in sorted order,
    so once `zz-barrier` is delivered, every earlier event has been handled."""
    token = f"name: zz-barrier\nn: {len(w.sink.changes)}\n".encode()
    (root / "zz-barrier.yaml").write_bytes(token)
    await w.sink.until(lambda: any(c.content == token for c in w.sink.changes))
    return [c for c in w.sink.changes if c.key != "zz-barrier"]


async def test_initial_snapshot_has_every_document(watched: tuple[Path, Watching]) -> None:
    _, w = watched
    assert list(w.sink.snapshots[0]) == ["a"]
    assert w.sink.snapshots[0]["a"].revision == revision_of(b"name: a\n")


async def test_save_by_rename_is_one_change(watched: tuple[Path, Watching]) -> None:
    root, w = watched
    tmp = root / ".a.yaml.swp"
    tmp.write_bytes(b"name: a\nversion: v2\n")
    os.replace(tmp, root / "a.yaml")
    assert [c.content for c in await barrier(root, w)] == [b"name: a\nversion: v2\n"]


async def test_truncate_then_write_ends_in_the_full_content(watched: tuple[Path, Watching]) -> None:
    root, w = watched
    with open(root / "a.yaml", "wb") as f:
        f.truncate(0)
        f.flush()
        f.write(b"name: a\nversion: v3\n")
    await w.sink.until(lambda: w.sink.state()["a"][1] == b"name: a\nversion: v3\n")


async def test_identical_rewrite_is_not_a_change(watched: tuple[Path, Watching]) -> None:
    root, w = watched
    (root / "a.yaml").write_bytes(b"name: a\n")
    (root / "b.json").write_bytes(b"{}")
    assert [c.key for c in await barrier(root, w)] == ["b"]


async def test_delete_is_reported_as_a_delete(watched: tuple[Path, Watching]) -> None:
    root, w = watched
    (root / "a.yaml").unlink()
    await w.sink.until(lambda: w.sink.changes)
    assert w.sink.changes[0].deleted and w.sink.changes[0].key == "a"


async def test_swap_and_other_files_are_ignored(watched: tuple[Path, Watching]) -> None:
    root, w = watched
    for name in (".a.yaml.swp", "a.yaml~", "notes.txt", ".hidden.yaml"):
        (root / name).write_bytes(b"x")
    (root / "c.yml").write_bytes(b"name: c\n")
    assert [c.key for c in await barrier(root, w)] == ["c"]


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
        await LocalDirSource(LocalDirOptions(path=tmp_path / "nope")).snapshot()


async def test_an_inotify_overflow_triggers_a_full_reread(watched: tuple[Path, Watching]) -> None:
    _, w = watched
    assert len(w.sink.snapshots) == 1  # resync_interval=0: no periodic re-reads
    source = w.source
    assert isinstance(source, LocalDirSource) and source._inbox is not None
    source._inbox.on_queue_overflow()  # what the inotify thread calls when events were lost
    await w.sink.until(lambda: len(w.sink.snapshots) == 2)
    assert list(w.sink.snapshots[1]) == ["a"]


async def test_the_directory_going_away_is_an_outage(watched: tuple[Path, Watching]) -> None:
    root, w = watched
    for f in root.iterdir():
        f.unlink()
    root.rmdir()
    await w.sink.until(lambda: (False, f"model directory {root} does not exist") in w.sink.edges)
    root.mkdir()
    (root / "b.yaml").write_bytes(b"name: b\n")
    await w.sink.until(lambda: len(w.sink.snapshots) == 2)
    assert list(w.sink.snapshots[1]) == ["b"]
    (root / "c.yaml").write_bytes(b"name: c\n")  # watched again
    await w.sink.until(lambda: "c" in w.sink.state())
