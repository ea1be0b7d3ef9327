"""Digests of weights: a file's bytes, or a directory's manifest (docs/trust.md).

- a file: its bytes;
- a directory: its *manifest*, the text `sha256sum` prints for every regular file under
  it, one `<hex>  <relative/posix/path>\\n` line each, sorted by path; the digest is the
  sha256 of that text. A symlink (to a file or a directory) or any other non-regular entry
  inside the directory is refused (and so is a device or FIFO as the weights themselves:
  /dev/zero would be hashed forever), never followed: a symlinked subdirectory would let its
  target change without changing the digest, while the server reading the directory follows
  it. Files are opened with O_NOFOLLOW, so a file swapped for a symlink mid-walk is refused
  too.

Hashing streams 1 MiB chunks in a worker thread, so a multi-GB file costs no memory and does
not block the event loop; cancelling the awaiting task stops the thread at the next chunk.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from watcher.core.errors import VerificationError

CHUNK = 1024 * 1024


class _Cancelled(Exception):
    """The awaiting task was cancelled; the worker thread stops at the next chunk."""


def local_path(uri: str) -> Path | None:
    """The local path of a file:// URI or an absolute path; None for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def _hash_file(path: Path, stop: threading.Event, buf: bytearray, *, follow: bool = True) -> str:
    h = hashlib.sha256()
    view = memoryview(buf)
    # O_NONBLOCK: opening a FIFO must not block the thread forever (it is refused just below).
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VerificationError(f"{path} is a symlink; weights directories may hold none") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)  # a device (/dev/zero never ends), FIFO or socket
        raise VerificationError(f"{path} is not a regular file or directory")
    with os.fdopen(fd, "rb", buffering=0) as f:
        while True:
            if stop.is_set():
                raise _Cancelled
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def _walk_error(exc: OSError) -> None:
    raise VerificationError(f"cannot list {exc.filename}: {exc.strerror}")


def manifest_lines(root: Path, stop: threading.Event | None = None) -> list[str]:
    """`<sha256>  <relative posix path>` for every regular file under `root`, path-sorted.

    Every entry must be a regular file or a real directory: a symlink or a device, FIFO or
    socket is refused (VerificationError), so what the digest covers is exactly what a
    reader of the directory gets.
    """
    stop = stop or threading.Event()
    buf = bytearray(CHUNK)
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise VerificationError(f"{p} is a symlink; weights directories may hold none "
                                        "(copy the file in, or point model.uri at its target)")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise VerificationError(f"{p} is not a regular file or directory")
        files.extend((Path(dirpath, n).relative_to(root).as_posix(), Path(dirpath, n)) for n in filenames)
    files.sort()
    return [f"{_hash_file(p, stop, buf, follow=False)}  {rel}\n" for rel, p in files]


def digest_path_sync(path: Path, stop: threading.Event | None = None) -> str:
    """sha256 of a file's bytes, or of a directory's manifest text."""
    stop = stop or threading.Event()
    if path.is_dir():
        text = "".join(manifest_lines(path, stop))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    return _hash_file(path, stop, bytearray(CHUNK))


async def digest_path(path: Path) -> str:
    """`digest_path_sync` in a worker thread; cancelling stops the thread at the next chunk."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(digest_path_sync, path, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
