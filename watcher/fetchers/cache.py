"""The content-addressed weights cache under `state_dir/blobs/`.

    sha256/<hex>           verified blobs only (renamed in after the digest matched), 0444
    partial/<hex>[.json]   downloads in progress, apart from the cache proper: resumable
                           after a cut or a restart, bounded by `partial_quota`
    artifacts/<hex>.json   what a document digest names (its blobs and file names), written
                           when first resolved, so a cached artifact needs no network
    views/<hex>/<name>     hard links to the blobs under their file names: the path the model
                           server is given (a file for one blob, the directory otherwise)
    locks/<hex>.lock       flock: one download of a blob at a time, across processes

Eviction is least recently used (a blob's mtime, touched at every staging) under `quota`,
never of a protected digest (what the applied and the previous stable revision of every
model and the revisions being staged use). Evicting a blob removes the views linking it,
so its space is really freed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from watcher.fetchers.base import Artifact, Blob, FetchFailed
from watcher.fetchers.transfer import discard
from watcher.fsutil import write_atomically

PARTIAL_MAX_AGE = 7 * 24 * 3600.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobCache:
    def __init__(self, root: Path, quota: int = 0, partial_quota: int = 0) -> None:
        self.root = root
        self.quota = quota
        self.partial_quota = partial_quota or quota
        self.blobs, self.partials = root / "sha256", root / "partial"
        self.artifacts, self.views, self.locks = root / "artifacts", root / "views", root / "locks"
        self._lock = threading.Lock()
        self._ready = False

    def ready(self) -> BlobCache:
        """Create the directories (on first use, so that merely configuring costs nothing)."""
        if not self._ready:
            for d in (self.blobs, self.partials, self.artifacts, self.views, self.locks):
                d.mkdir(parents=True, exist_ok=True)
            self._ready = True
        return self

    # -- blobs -------------------------------------------------------------------------
    def blob(self, digest: str) -> Path:
        return self.blobs / digest

    def has(self, digest: str) -> bool:
        return self.blob(digest).is_file()

    def part(self, digest: str) -> Path:
        return self.partials / digest

    def touch(self, digests: Iterable[str]) -> None:
        """Mark as used now (the LRU order)."""
        for d in digests:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.blob(d))

    def commit(self, part: Path, digest: str) -> Path:
        """Move a verified, fsynced partial into the cache proper (atomic rename)."""
        dest = self.blob(digest)
        os.chmod(part, 0o444)
        os.replace(part, dest)
        _fsync_dir(self.blobs)
        discard(part)
        return dest

    def put(self, digest: str, data: bytes) -> None:
        """A small verified blob (an OCI manifest) written in one go."""
        write_atomically(self.blob(digest), data, mode=0o444)

    @contextlib.contextmanager
    def locked(self, digest: str, stop: threading.Event) -> Iterator[None]:
        """Hold the blob's download lock (polls, so a cancelled transfer stops waiting)."""
        with open(self.locks / f"{digest}.lock", "w") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if stop.wait(0.1):
                        raise InterruptedError("cancelled while waiting for the blob lock") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- artifacts and views ---------------------------------------------------------------
    def record(self, artifact: Artifact) -> None:
        doc = {"digest": artifact.digest, "directory": artifact.directory,
               "blobs": [{"digest": b.digest, "size": b.size, "name": b.name} for b in artifact.blobs]}
        write_atomically(self.artifacts / f"{artifact.digest}.json", json.dumps(doc).encode())

    def artifact(self, digest: str) -> Artifact | None:
        try:
            doc = json.loads((self.artifacts / f"{digest}.json").read_text())
            blobs = tuple(Blob(str(b["digest"]), b["size"], str(b["name"])) for b in doc["blobs"])
            return Artifact(digest, blobs, bool(doc["directory"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def members(self, digest: str) -> set[str]:
        """Every cache digest an artifact needs (its blobs, and itself: an OCI manifest)."""
        found = self.artifact(digest)
        return {digest} | ({b.digest for b in found.blobs} if found else set())

    def served_path(self, artifact: Artifact) -> Path:
        view = self.views / artifact.digest
        return view if artifact.directory else view / artifact.blobs[0].name

    def view(self, artifact: Artifact) -> Path:
        """The path the server is given; links are (re)made when missing. All blobs present."""
        final = self.views / artifact.digest
        if not all((final / b.name).is_file() for b in artifact.blobs):
            tmp = self.views / f".{artifact.digest}.{os.getpid()}.{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            for b in artifact.blobs:
                dest = tmp / b.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(self.blob(b.digest), dest)
            with self._lock:
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
        return self.served_path(artifact)

    def has_view(self, digest: str) -> Path | None:
        found = self.artifact(digest)
        if found is None:
            return None
        path = self.served_path(found)
        return path if path.exists() and all(self.has(b.digest) for b in found.blobs) else None

    # -- quota ------------------------------------------------------------------------
    def usage(self) -> int:
        if not self.blobs.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.blobs.iterdir() if p.is_file())

    def make_room(self, need: int, protected: set[str]) -> None:
        """Evict least recently used unprotected blobs until `need` more bytes fit."""
        if not self.quota:
            return
        with self._lock:
            entries = sorted((p.stat().st_mtime, p.stat().st_size, p.name)
                             for p in self.blobs.iterdir() if p.is_file())
            used = sum(size for _, size, _ in entries)
            for _, size, name in entries:
                if used + need <= self.quota:
                    break
                if name in protected:
                    continue
                self._evict(name)
                used -= size
            if used + need > self.quota:
                raise FetchFailed(
                    f"weights cache quota ({self.quota} bytes) too small: {need} bytes more are "
                    f"needed and {used} are held by the applied, previous stable and staging "
                    "revisions (raise weights.quota)", retryable=False)

    def _evict(self, digest: str) -> None:
        for record in self.artifacts.glob("*.json"):
            art = self.artifact(record.stem)
            if art is not None and digest in {b.digest for b in art.blobs} | {art.digest}:
                shutil.rmtree(self.views / art.digest, ignore_errors=True)
        self.blob(digest).unlink(missing_ok=True)

    def prune_partials(self, keep: str, need: int) -> None:
        """Bound the partial area: drop stale partials, then the oldest, to fit `need`."""
        now = time.time()
        entries = []
        for p in self.partials.iterdir():
            if p.suffix == ".json" or p.name == keep:
                continue
            st = p.stat()
            if now - st.st_mtime > PARTIAL_MAX_AGE:
                discard(p)
            else:
                entries.append((st.st_mtime, st.st_size, p))
        if not self.partial_quota:
            return
        used = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if used + need <= self.partial_quota:
                break
            discard(p)
            used -= size
