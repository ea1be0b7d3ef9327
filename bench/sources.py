"""The config centers a benchmark publishes to: a local directory, etcd, Nacos.

Each `Center` starts its real server (the tests' own launchers), knows the daemon's
`[source]` settings for it, and publishes one document. Used by latency, footprint, scale
and fan-out alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol


class Center(Protocol):
    kind: str

    def source_settings(self) -> dict[str, Any]: ...
    def publish(self, name: str, content: bytes) -> None: ...


class LocalDirCenter:
    kind = "localdir"

    def __init__(self, root: Path) -> None:
        self.root = root / "models"
        self.root.mkdir(parents=True, exist_ok=True)

    def source_settings(self) -> dict[str, Any]:
        return {"kind": "localdir", "path": str(self.root), "resync_interval": 0}

    def publish(self, name: str, content: bytes) -> None:
        path = self.root / f"{name}.yaml"
        tmp = path.with_name(f".{name}.yaml.tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)


class EtcdCenter:
    kind = "etcd"
    prefix = "/model-watcher/models/"

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def source_settings(self) -> dict[str, Any]:
        return {"kind": "etcd", "endpoints": self.cluster.endpoints, "prefix": self.prefix,
                "resync_interval": 0}

    def publish(self, name: str, content: bytes) -> None:
        self.cluster.put(self.prefix + name, content)

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """One transaction per batch of distinct keys: etcd fsyncs once per transaction, so a
        burst of thousands of publishes takes seconds instead of minutes."""
        import base64

        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode()

        batch: dict[str, bytes] = {}
        for name, content in items:
            if name in batch or len(batch) == 100:  # a txn may not put one key twice
                self._txn(batch, b64)
                batch = {}
            batch[name] = content
        if batch:
            self._txn(batch, b64)

    def _txn(self, batch: dict[str, bytes], b64: Any) -> None:
        ops = [{"requestPut": {"key": b64((self.prefix + n).encode()), "value": b64(c)}} for n, c in batch.items()]
        self.cluster.call("kv/txn", {"success": ops})


class NacosCenter:
    kind = "nacos"
    group = "MODEL_SERVING"

    def __init__(self, server: Any) -> None:
        self.server = server

    def source_settings(self) -> dict[str, Any]:
        return {"kind": "nacos", "server_addresses": [self.server.address], "group": self.group,
                "username": self.server.username, "password": self.server.password,
                "resync_interval": 0}

    def publish(self, name: str, content: bytes) -> None:
        self.server.put(f"{name}.yaml", content, group=self.group)


@contextlib.contextmanager
def center(kind: str, root: Path) -> Iterator[Center]:
    """Start the real server behind `kind` in `root`; stop it afterwards."""
    if kind == "localdir":
        yield LocalDirCenter(root)
    elif kind == "etcd":
        from tests.infra.etcd import EtcdCluster

        cluster = EtcdCluster(root / "etcd").start()
        try:
            yield EtcdCenter(cluster)
        finally:
            cluster.stop()
    elif kind == "nacos":
        from tests.infra.nacos_server import NacosServer

        server = NacosServer(root / "nacos", auth=True).start()
        try:
            yield NacosCenter(server)
        finally:
            server.stop()
    else:
        raise SystemExit(f"unknown source {kind!r} (localdir, etcd, nacos)")
