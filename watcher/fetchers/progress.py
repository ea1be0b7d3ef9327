"""Fetch progress per model (bytes, rate, eta) for `status`, `pull` and the metrics.

`Board` is written from download threads (`add`) and read from the event loop, so it locks;
it mirrors itself into `progress.json` in the cache directory at most once a second (and at
every start and finish), which `model-watcher status` reads while the daemon runs. `STATS`
holds the process-wide counters the Prometheus collector exposes (one daemon per process).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from watcher.fsutil import write_atomically

WRITE_EVERY = 1.0


@dataclass
class Progress:
    model: str
    uri: str
    total: int | None
    done: int = 0  # bytes in place, including those already cached or resumed
    fetched: int = 0  # bytes that came over the network in this staging
    state: str = "fetching"  # fetching | done | failed
    reason: str | None = None
    rate: float = 0.0  # bytes/s, smoothed
    eta: float | None = None  # seconds
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    _mark: tuple[float, int] = (0.0, 0)

    def public(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class FetchStats:
    """Process-wide counters: bytes by scheme, fetches by scheme and result, cache size."""

    bytes: Counter[str] = field(default_factory=Counter)
    fetches: Counter[tuple[str, str]] = field(default_factory=Counter)
    cache_bytes: int = 0
    boards: list[Board] = field(default_factory=list)

    def in_flight(self) -> list[Progress]:
        return [p for b in self.boards for p in b.snapshot() if p.state == "fetching"]


STATS = FetchStats()


class Board:
    def __init__(self, path: Path | None, listener: Callable[[Progress], None] | None = None) -> None:
        self.path = path
        self.listener = listener
        self._lock = threading.Lock()
        self._items: dict[str, Progress] = {}
        self._written = 0.0
        STATS.boards.append(self)
        del STATS.boards[:-8]

    def start(self, model: str, uri: str, total: int | None, cached: int) -> None:
        with self._lock:
            self._items[model] = Progress(model, uri, total, done=cached)
        self._publish(force=True)

    def add(self, model: str, scheme: str, n: int) -> None:
        now = time.time()
        with self._lock:
            STATS.bytes[scheme] += n
            p = self._items.get(model)
            if p is None:
                return
            p.done += n
            p.fetched += n
            p.updated = now
            t0, d0 = p._mark
            if now - t0 >= 0.5:
                if t0:
                    inst = (p.done - d0) / (now - t0)
                    p.rate = inst if not p.rate else 0.6 * p.rate + 0.4 * inst
                p._mark = (now, p.done)
                if p.total is not None and p.rate > 0:
                    p.eta = max(p.total - p.done, 0) / p.rate
        self._publish()

    def finish(self, model: str, state: str, reason: str | None = None) -> None:
        with self._lock:
            p = self._items.get(model)
            if p is None:
                return
            p.state, p.reason, p.updated = state, reason, time.time()
            if state == "done":
                p.eta = 0.0
                elapsed = p.updated - p.started
                if elapsed > 0 and p.fetched:
                    p.rate = p.fetched / elapsed
        self._publish(force=True)

    def get(self, model: str) -> Progress | None:
        with self._lock:
            p = self._items.get(model)
            return Progress(**{**asdict(p)}) if p else None

    def snapshot(self) -> list[Progress]:
        with self._lock:
            return [Progress(**asdict(p)) for p in self._items.values()]

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < WRITE_EVERY:
            return
        self._written = now
        items = self.snapshot()
        if self.listener is not None:
            for p in items:
                self.listener(p)
        if self.path is not None:
            doc = {p.model: p.public() for p in items}
            # progress is advisory; a full disk is reported by the download itself
            with contextlib.suppress(OSError):
                write_atomically(self.path, json.dumps(doc, indent=1).encode())


def read_progress(path: Path) -> dict[str, dict[str, object]]:
    """What `status` shows: the last progress.json the daemon (or `pull`) wrote."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
