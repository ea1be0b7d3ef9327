"""Fixtures for the etcd area: one shared member per session, private ones for kill tests.

Tests isolate from each other by prefix (`prefix` fixture), so the shared member is safe.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.etcd import EtcdCluster
from watcher.sources.etcd import EtcdOptions, EtcdSource

_counter = itertools.count()


def etcd_state(cluster: EtcdCluster, prefix: str) -> dict[str, tuple[str, bytes]]:
    """What etcd holds under `prefix`, as the sink's state() shape."""
    import base64

    from watcher.sources.etcd_wire import prefix_range_end

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
        options.setdefault("check_interval", 1.0)
        source = EtcdSource(EtcdOptions.model_validate(options))
        made.append(source)
        return source

    yield make


@pytest.fixture
def private_root(tmp_path: Path) -> Path:
    return tmp_path
