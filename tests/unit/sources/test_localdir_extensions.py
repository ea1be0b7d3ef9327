"""One model with both NAME.yaml and NAME.json: every path (full read, file event, publish)
picks the same file (.yaml, then .yml, then .json), so the model never flips between them.

Before: the full read took NAME.json (first in name order) and a file event NAME.yaml, so
each event and each periodic re-read delivered the other document as a new revision."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path

from watcher.sources.base import Change
from watcher.sources.localdir import LocalDirOptions, LocalDirSource, revision_of

YAML, JSON = b"name: demo\nversion: v1.0.0\n", b'{"name": "demo", "version": "v2.0.0"}'


class Sink:
    def __init__(self) -> None:
        self.revisions: list[str] = []

    def changed(self, change: Change) -> None:
        self.revisions.append(change.revision)

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        self.revisions.extend(c.revision for c in changes.values())

    def connectivity(self, up: bool, detail: str = "") -> None:
        return None


async def test_yaml_and_json_of_one_model_never_flip(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_bytes(JSON)
    (tmp_path / "demo.yaml").write_bytes(YAML)
    src = LocalDirSource(LocalDirOptions(path=tmp_path, resync_interval=0.2))
    assert (await src.read_all())["demo"].revision == revision_of(YAML)
    sink = Sink()
    task = asyncio.create_task(src.watch(sink))
    try:
        await asyncio.sleep(0.3)
        (tmp_path / "demo.json").write_bytes(JSON + b" ")  # an event on the other file
        await asyncio.sleep(0.6)  # and a few periodic re-reads
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sink.revisions and set(sink.revisions) == {revision_of(YAML)}
    assert await src.publish("demo", YAML + b"# edited\n") == revision_of(YAML + b"# edited\n")
    assert (tmp_path / "demo.yaml").read_bytes().endswith(b"# edited\n")
    assert (tmp_path / "demo.json").read_bytes() == JSON + b" "
