"""Fixtures for the etcd area: one shared member per session, private ones for kill tests.

Tests isolate from each other by prefix (`prefix` fixture), so the shared member is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.infra.etcd import EtcdCluster
from watcher.sources.base import Change
from watcher.sources.etcd import EtcdOptions, EtcdSource

_counter = itertools.count()


class RecordingSink:
    """Records what a source delivers; `state()` folds it into key -> (revision, content)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshots: list[dict[str, Change]] = []
        self.changes: list[Change] = []
        self.connectivity_edges: list[tuple[bool, str]] = []
        self._state: dict[str, tuple[str, bytes]] = {}

    def changed(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)
            if change.content is None:
                self._state.pop(change.key, None)
            else:
                self._state[change.key] = (change.revision, change.content)

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        with self.lock:
            self.snapshots.append(dict(changes))
            self._state = {k: (c.revision, c.content) for k, c in changes.items()
                           if c.content is not None}

    def connectivity(self, up: bool, detail: str = "") -> None:
        with self.lock:
            self.connectivity_edges.append((up, detail))

    def state(self) -> dict[str, tuple[str, bytes]]:
        with self.lock:
            return dict(self._state)

    def delivered_revisions(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(c.key, c.revision) for c in self.changes]


async def eventually(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Watching:
    """A source's watch() running as a task into a RecordingSink."""

    def __init__(self, source: EtcdSource) -> None:
        self.source = source
        self.sink = RecordingSink()
        self.task: asyncio.Task[None] = asyncio.create_task(source.watch(self.sink))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.source.aclose()


def etcd_state(cluster: EtcdCluster, prefix: str) -> dict[str, tuple[str, bytes]]:
    """What etcd holds under `prefix`, as the sink's state() shape."""
    import base64

    from watcher.sources.etcd_gateway import prefix_range_end

    data = cluster.call("kv/range", {
        "key": base64.b64encode(prefix.encode()).decode(),
        "range_end": base64.b64encode(prefix_range_end(prefix.encode())).decode()})
    out = {}
    for kv in data.get("kvs", []):  # type: ignore[union-attr]
        key = base64.b64decode(kv["key"]).decode()[len(prefix):]
        out[key] = (str(kv["mod_revision"]), base64.b64decode(kv.get("value", "")))
    return out


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-shared")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix() -> str:
    return f"/mw-test/{next(_counter)}-{time.monotonic_ns()}/"


@pytest.fixture
def make_source() -> Iterator[Callable[..., EtcdSource]]:
    made: list[EtcdSource] = []

    def make(**options: Any) -> EtcdSource:
        options.setdefault("timeout", 2.0)
        options.setdefault("max_backoff", 1.0)
        options.setdefault("keepalive_interval", 1.0)
        source = EtcdSource(EtcdOptions.model_validate(options))
        made.append(source)
        return source

    yield make


@contextlib.asynccontextmanager
async def watching(source: EtcdSource) -> AsyncIterator[Watching]:
    """Run `source.watch()` for the block; cancel it and close the source afterwards."""
    w = Watching(source)
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
def private_root(tmp_path: Path) -> Path:
    return tmp_path
