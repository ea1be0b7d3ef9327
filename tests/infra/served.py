"""The shape every source's end-to-end tests share: the example model server, and the real
daemon watching a config center through `source`, publishing through the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from tests.infra.daemon import DaemonHarness
from tests.infra.model_server import ModelServer


def doc(version: str = "v1.0.0", temperature: float = 0.7, name: str = "demo", **extra: Any) -> bytes:
    """A valid model document with a hot-class `temperature`."""
    return yaml.safe_dump({
        "name": name, "version": version,
        "model": {"uri": f"file:///srv/models/{name}/{version}",
                  "parameters": {"temperature": temperature}},
        "metadata": {"model_id": f"{name}-{version}"}, **extra,
    }).encode()


class ServedDaemon:
    def __init__(self, tmp: Path, source: dict[str, Any]) -> None:
        self.tmp = tmp
        self.server = ModelServer(tmp / "server").start()
        self.daemon = DaemonHarness(tmp / "daemon", {"source": source, **self.server.settings()})

    def publish(self, content: bytes, *args: str, name: str = "demo") -> Any:
        """`model-watcher publish` through the CLI, as a pipeline would."""
        path = self.tmp / f"{name}-{hashlib.sha256(content).hexdigest()[:16]}.yaml"
        path.write_bytes(content)
        kind = self.daemon.settings["source"]["kind"]
        return self.daemon.cli("publish", name, str(path), "--source", kind, *args)

    def served(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.server.config()["spec"] or {}
        return spec

    def close(self) -> None:
        self.daemon.stop()
        self.server.stop()
