"""One model with both NAME.yaml and NAME.json: every path (full read, file event, publish)
picks the same file (.yaml, then .yml, then .json), so the model never flips between them.

Before: the full read took NAME.json (first in name order) and a file event NAME.yaml, so
each event and each periodic re-read delivered the other document as a new revision."""

from __future__ import annotations

from pathlib import Path

from watcher.fakes.sink import watching
from watcher.sources.localdir import LocalDirOptions, LocalDirSource, revision_of

YAML, JSON = b"name: demo\nversion: v1.0.0\n", b'{"name": "demo", "version": "v2.0.0"}'


async def test_yaml_and_json_of_one_model_never_flip(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_bytes(JSON)
    (tmp_path / "demo.yaml").write_bytes(YAML)
    src = LocalDirSource(LocalDirOptions(path=tmp_path, resync_interval=0.2))
    assert (await src.snapshot()).documents["demo"].revision == revision_of(YAML)
    async with watching(src, close=False) as w:
        (tmp_path / "demo.json").write_bytes(JSON + b" ")  # an event on the other file
        await w.sink.until(lambda: len(w.sink.snapshots) >= 3)  # and periodic re-reads
        (tmp_path / "zz.yaml").write_bytes(b"name: zz\n")  # a barrier: events come in order
        await w.sink.until(lambda: "zz" in w.sink.state())
    revisions = [c.revision for s in w.sink.snapshots for c in s.values() if c.key == "demo"]
    revisions += [c.revision for c in w.sink.changes if c.key == "demo"]
    assert revisions and set(revisions) == {revision_of(YAML)}
    assert await src.publish("demo", YAML + b"# edited\n") == revision_of(YAML + b"# edited\n")
    assert (tmp_path / "demo.yaml").read_bytes().endswith(b"# edited\n")
    assert (tmp_path / "demo.json").read_bytes() == JSON + b" "
