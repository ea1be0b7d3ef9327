"""Fixtures for the Nacos area: one real Nacos (auth on) per session, shared by every test.

Tests isolate from each other by group (`group` fixture). Outage tests stop and restart the
shared server (same ports, same data); `nacos` makes sure it is up again before each test.
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

from tests.infra.nacos_server import NacosServer
from watcher.plugins import PluginContext
from watcher.sources.base import Change
from watcher.sources.nacos import NacosSource
from watcher.sources.nacos_options import NacosOptions

_counter = itertools.count()


class RecordingSink:
    """Records what a source delivers, in order, as ("changed"|"snapshot"|"up"|"down", ...)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []

    def changed(self, change: Change) -> None:
        with self.lock:
            self.events.append(("changed", change))

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        with self.lock:
            self.events.append(("snapshot", dict(changes)))

    def connectivity(self, up: bool, detail: str = "") -> None:
        with self.lock:
            self.events.append(("up" if up else "down", detail))

    def of(self, kind: str) -> list[Any]:
        with self.lock:
            return [e[1] for e in self.events if e[0] == kind]

    def state(self) -> dict[str, tuple[str, bytes]]:
        """The documents as the sink now knows them: key -> (revision, content)."""
        out: dict[str, tuple[str, bytes]] = {}
        with self.lock:
            for kind, value in self.events:
                if kind == "snapshot":
                    out = {k: (c.revision, c.content) for k, c in value.items() if c.content}
                elif kind == "changed":
                    if value.content is None:
                        out.pop(value.key, None)
                    else:
                        out[value.key] = (value.revision, value.content)
        return out


async def eventually(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Watching:
    """A source's watch() running as a task into a RecordingSink."""

    def __init__(self, source: NacosSource) -> None:
        self.source = source
        self.sink = RecordingSink()
        self.task: asyncio.Task[None] = asyncio.create_task(source.watch(self.sink))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.source.aclose()


@contextlib.asynccontextmanager
async def watching(source: NacosSource) -> AsyncIterator[Watching]:
    """Run `source.watch()` for the block; cancel it and close the source afterwards."""
    w = Watching(source)
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture(scope="session")
def nacos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacosServer]:
    server = NacosServer(tmp_path_factory.mktemp("nacos-shared"), auth=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nacos(nacos_server: NacosServer) -> NacosServer:
    """The shared server, restarted first if an earlier (failed) outage test left it down."""
    if not nacos_server.alive():
        nacos_server.start()
    return nacos_server


@pytest.fixture
def group() -> str:
    return f"MW_TEST_{next(_counter)}_{time.monotonic_ns() % 10**9}"


@pytest.fixture
def make_source(nacos: NacosServer, group: str,
                tmp_path: Path) -> Iterator[Callable[..., NacosSource]]:
    """NacosSource factory with the shared server's address, admin credentials and `group`."""
    made: list[NacosSource] = []

    def make(**options: Any) -> NacosSource:
        options.setdefault("server_addresses", [nacos.address])
        options.setdefault("group", group)
        options.setdefault("username", nacos.username)
        options.setdefault("password", nacos.password)
        options.setdefault("timeout", 3.0)
        options.setdefault("max_backoff", 1.0)
        options.setdefault("check_interval", 0.5)
        ctx = PluginContext(state_dir=tmp_path / f"state-{len(made)}", environment="test")
        source = NacosSource(NacosOptions.model_validate(options), ctx)
        made.append(source)
        return source

    yield make
