"""Local directory source (the embedded default): one document per file, watched with inotify.

Key = file name without its extension (`config/models/qwen-chat.yaml` -> `qwen-chat`);
revision = sha256 of the content (first 16 hex digits), so a rewrite with identical bytes is
not a change. Editors that save by rename (vim, most IDEs) or truncate-then-write are handled
by re-reading the file after any event on it and reporting only content that changed; a
half-written (empty) file is settled by the reconciler's quiescence window. A removed file is
a delete, never an empty document. Hidden files, editor swap/backup files and other
extensions are ignored.

Events come from watchdog's inotify binding (`InotifyFD`, one watch on the directory), not
from its Observer: the Observer pairs every rename's MOVED_FROM/MOVED_TO in a queue it scans
linearly, which made a burst of 10,000 renames take over a minute (docs/performance.md).
Here the inotify thread only adds the file name to a set; the event loop takes the whole set
at once, so a burst costs one read per file that changed. A kernel queue overflow (events
lost) is a `ResyncNeeded`; the directory itself disappearing is an outage.

When a model has files with several extensions, one rule picks the same one on every path
(full read, event, publish): `.yaml`, then `.yml`, then `.json`; the others are named in a
warning at each full read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field
from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD, Mask

from watcher.core.errors import ConflictError, SourceUnavailable
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Batch, Change, ResyncNeeded, SessionOptions, Snapshot

log = logging.getLogger("watcher.sources.localdir")
EXTENSIONS = (".yaml", ".yml", ".json")
#: What can change a file's content (opens and reads are not: our own reads raise them).
MASK = Mask(InotifyConstants.IN_CLOSE_WRITE | InotifyConstants.IN_MODIFY | InotifyConstants.IN_CREATE
        | InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_MOVED_FROM | InotifyConstants.IN_DELETE
        | InotifyConstants.IN_DELETE_SELF | InotifyConstants.IN_MOVE_SELF)


class LocalDirOptions(SessionOptions):
    path: Path = Path("config/models")
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


class _Inbox:
    """The inotify callback (runs in watchdog's thread): collects names, wakes the loop once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._lost = False
        self._gone = False
        self.wake = asyncio.Event()

    def _signal(self) -> None:
        self._loop.call_soon_threadsafe(self.wake.set)

    def on_event(self, event: InotifyEvent) -> None:
        if event.is_delete_self or event.is_move_self:
            self.on_watch_deleted(event.wd)
            return
        if event.is_directory or not event.name:
            return
        name = os.fsdecode(event.name)
        if key_of(Path(name)) is None:
            return
        with self._lock:
            first = not self._names
            self._names.add(name)
        if first:
            self._signal()

    def on_watch_deleted(self, wd: object) -> None:
        with self._lock:
            self._gone = True
        self._signal()

    def on_queue_overflow(self) -> None:
        with self._lock:
            self._lost = True
        self._signal()

    def take(self) -> tuple[set[str], bool, bool]:
        """(names, events lost, directory gone) since the last take."""
        with self._lock:
            names, self._names = self._names, set()
            lost, gone = self._lost, self._gone
            self._lost = False
            return names, lost, gone


class LocalDirSource:
    name = "localdir"
    resumable: ClassVar[bool] = False

    def __init__(self, options: LocalDirOptions) -> None:
        self.options = options
        self.root = options.path
        self._inotify: InotifyFD | None = None
        self._inbox: _Inbox | None = None
        self._seen: dict[str, str] = {}  # key -> revision last delivered
        self._generation = 0

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> LocalDirSource:
        return cls(parse_options(LocalDirOptions, options, "source"))

    # -- reading -------------------------------------------------------------------
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
        except (FileNotFoundError, IsADirectoryError):
            return None
        return Change(key, revision_of(content), content)

    def _missing(self) -> SourceUnavailable:
        return SourceUnavailable(f"model directory {self.root} does not exist")

    async def snapshot(self) -> Snapshot:
        """Every document now; starts (or restarts) the directory's watch first, so that
        nothing written between this read and the stream is missed."""
        if not self.root.is_dir():
            raise self._missing()
        self._watch()
        changes = {}
        for key, path in self._files().items():
            change = self._read(path)
            if change is not None:
                changes[key] = change
        self._seen = {k: c.revision for k, c in changes.items()}
        self._generation += 1
        return Snapshot(changes, self._generation)

    def _watch(self) -> None:
        if self._inotify is not None and self._inotify.is_alive():
            assert self._inbox is not None
            _, _, gone = self._inbox.take()  # events before this read are covered by it
            if not gone:
                return
        self._unwatch()
        self._inbox = _Inbox(asyncio.get_running_loop())
        self._inotify = InotifyFD()
        self._inotify.start()
        try:
            self._inotify.add_callback(os.fsencode(self.root), MASK, self._inbox, CallbackId(1))
        except OSError as exc:
            self._unwatch()
            raise SourceUnavailable(f"cannot watch {self.root}: {exc.strerror}") from exc

    def _unwatch(self) -> None:
        if self._inotify is not None:
            self._inotify.stop()
            self._inotify = None

    async def changes(self, cursor: int) -> AsyncIterator[Batch]:
        inbox = self._inbox
        if inbox is None or cursor != self._generation:
            raise ResyncNeeded("no watch for this snapshot")
        while True:
            await inbox.wake.wait()
            inbox.wake.clear()
            names, lost, gone = inbox.take()
            if gone:
                raise self._missing() if not self.root.is_dir() else ResyncNeeded(
                    f"{self.root} was replaced")
            if lost:
                raise ResyncNeeded("inotify dropped events")
            batch = [c for c in (self._changed(name) for name in sorted(names)) if c is not None]
            if batch:
                yield Batch(batch, cursor)

    def _changed(self, name: str) -> Change | None:
        key = key_of(Path(name))
        if key is None:
            return None
        # Only the few names this key can have: re-listing the directory per event made a
        # burst over 1,000 files take minutes (docs/performance.md).
        current = next((p for ext in EXTENSIONS if (p := self.root / f"{key}{ext}").is_file()), None)
        change = self._read(current) if current else None
        if change is None:
            if key in self._seen:
                del self._seen[key]
                return Change.deletion(key)
            return None
        if self._seen.get(key) == change.revision:
            return None
        self._seen[key] = change.revision
        return change

    async def check(self) -> None:
        if not self.root.is_dir():
            raise self._missing()

    # -- publishing ----------------------------------------------------------------
    async def publish(self, key: str, content: bytes, *, if_revision: str | None = None) -> str:
        """Write atomically (temp file in the same directory, then rename)."""
        if not self.root.is_dir():
            raise self._missing()
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
        self._unwatch()
