"""One process acts on a state directory: an flock held for the daemon's lifetime.

Two daemons (or a daemon and `once`) on one state directory would both act on the one model
server and race on its history. The kernel releases the lock when the process dies, kill -9
included, so there is no stale lock to clean up. The file also names the holder's pid for
the message the second process prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid written by the current holder (None when unknown)."""
        with contextlib.suppress(OSError, ValueError):
            return int(self.path.read_text().strip() or "0") or None
        return None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (probes without keeping it)."""
        if self._fd is not None:
            return False
        if not self.acquire():
            return True
        self.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
