"""Local directory source (the embedded default): one document per file, watched with watchdog.

Key = file name without its extension (`config/models/qwen-chat.yaml` -> `qwen-chat`);
revision = sha256 of the content (first 16 hex digits), so a rewrite with identical bytes is
not a change. Editors that save by rename (vim, most IDEs) or truncate-then-write are
handled by re-reading the file after any event on it and reporting only content that
changed; a half-written (empty) file is settled by the reconciler's quiescence window.
A removed file is reported as a delete, never as an empty document. Hidden files, editor
swap/backup files and other extensions are ignored. When a model has files with several
extensions, one rule picks the same one on every path (full read, event, publish): `.yaml`,
then `.yml`, then `.json`; the others are named in a warning at each full read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from watcher.core.errors import ConflictError, SourceUnavailable
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Change, Sink

log = logging.getLogger("watcher.sources.localdir")
EXTENSIONS = (".yaml", ".yml", ".json")


class LocalDirOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path = Path("config/models")
    resync_interval: float = Field(60.0, ge=0, description="full re-scan; catches missed events")
    max_bytes: int = Field(4 * 1024 * 1024, gt=0, description="read at most this much per file")


def revision_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def key_of(path: Path) -> str | None:
    name = path.name
    if name.startswith(".") or name.endswith("~") or path.suffix not in EXTENSIONS:
        return None
    return path.stem


def _preference(path: Path) -> tuple[str, int, str]:
    """Sort key: per model, the file the EXTENSIONS order prefers comes first."""
    rank = EXTENSIONS.index(path.suffix) if path.suffix in EXTENSIONS else len(EXTENSIONS)
    return path.stem, rank, path.name


#: Events that can change content. Opens and read-only closes are ignored: reading a file
#: ourselves raises them, which would otherwise feed back into a busy loop.
CONTENT_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})


#: The one signal watchdog gives when the kernel's inotify queue overflowed (events lost):
#: a WARNING from this logger. Non-recursive watches get no event for it.
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
RESCAN = Path("")  # queue sentinel: re-read everything


class _OverflowSignal(logging.Handler):
    """Turns watchdog's overflow warning into a full re-read (thread-safe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Path]) -> None:
        super().__init__(logging.WARNING)
        self._loop, self._queue = loop, queue

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, RESCAN)


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's thread: only hands paths to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Path]) -> None:
        self._loop, self._queue = loop, queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in CONTENT_EVENTS:
            return
        for p in (event.src_path, getattr(event, "dest_path", "")):
            if p:
                path = Path(os.fsdecode(p))
                if key_of(path):
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, path)


class LocalDirSource:
    name = "localdir"

    def __init__(self, options: LocalDirOptions) -> None:
        self.options = options
        self.root = options.path

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> LocalDirSource:
        return cls(parse_options(LocalDirOptions, options, "source"))

    def _files(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for path in sorted(self.root.iterdir(), key=_preference):
            key = key_of(path)
            if key and path.is_file():
                if key in out:
                    log.warning("%s and %s both define model %r; using %s", out[key].name,
                                path.name, key, out[key].name)
                    continue
                out[key] = path
        return out

    def _read(self, path: Path) -> Change | None:
        key = key_of(path)
        if key is None:
            return None
        try:
            with path.open("rb") as f:
                content = f.read(self.options.max_bytes + 1)
        except FileNotFoundError:
            return None
        return Change(key, revision_of(content), content)

    async def read_all(self) -> dict[str, Change]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"model directory {self.root} does not exist")
        changes = {}
        for key, path in self._files().items():
            change = self._read(path)
            if change is not None:
                changes[key] = change
        return changes

    async def watch(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Path] = asyncio.Queue()
        seen: dict[str, str] = {}
        while not self.root.is_dir():
            sink.connectivity(False, f"model directory {self.root} does not exist")
            await asyncio.sleep(1.0)
        observer = Observer()
        observer.schedule(_Handler(loop, queue), str(self.root), recursive=False)
        overflow = _OverflowSignal(loop, queue)
        logging.getLogger(OVERFLOW_LOGGER).addHandler(overflow)
        observer.start()
        try:
            snapshot = await self.read_all()
            seen = {k: c.revision for k, c in snapshot.items()}
            sink.snapshot(snapshot)
            interval = self.options.resync_interval or None
            while True:
                path: Path | None
                try:
                    path = await asyncio.wait_for(queue.get(), interval)
                except TimeoutError:
                    path = None  # the periodic re-read
                if path is None or path == RESCAN:
                    if path == RESCAN:
                        log.warning("inotify dropped events; re-reading %s now", self.root)
                    snapshot = await self.read_all()
                    seen = {k: c.revision for k, c in snapshot.items()}
                    sink.snapshot(snapshot)
                    continue
                self._on_path(path, seen, sink)
        finally:
            logging.getLogger(OVERFLOW_LOGGER).removeHandler(overflow)
            observer.stop()
            await asyncio.to_thread(observer.join, 5)

    def _on_path(self, path: Path, seen: dict[str, str], sink: Sink) -> None:
        key = key_of(path)
        if key is None:
            return
        # Only the few names this key can have: re-listing the directory per event made a
        # burst over 1,000 files take minutes (docs/performance.md).
        current = next((p for ext in EXTENSIONS if (p := self.root / f"{key}{ext}").is_file()), None)
        change = self._read(current) if current else None
        if change is None:
            if key in seen:
                del seen[key]
                sink.changed(Change(key, "deleted", None))
            return
        if seen.get(key) != change.revision:
            seen[key] = change.revision
            sink.changed(change)

    async def publish(self, key: str, content: bytes, *, if_revision: str | None = None) -> str:
        """Write atomically (temp file in the same directory, then rename)."""
        path = self._files().get(key) or self.root / f"{key}.yaml"
        if if_revision is not None:
            current = self._read(path) if path.exists() else None
            have = current.revision if current else ""
            want = "" if if_revision in ("", "0") else if_revision
            if have != want:
                raise ConflictError(
                    f"{key}: revision is {have or 'absent'}, not {if_revision}; re-read and retry"
                )
        write_atomically(path, content)
        return revision_of(content)

    async def aclose(self) -> None:
        return None
