"""Fixtures for the Nacos area: one real Nacos (auth on) per session, shared by every test.

Tests isolate from each other by group (`group` fixture). Outage tests stop and restart the
shared server (same ports, same data); `nacos` makes sure it is up again before each test.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.nacos_server import NacosServer
from watcher.plugins import PluginContext
from watcher.sources.nacos import NacosSource
from watcher.sources.nacos_options import NacosOptions

_counter = itertools.count()


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
