from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.served import ServedDaemon


def doc(version: str = "v1.0.0", temperature: float = 0.7, flavor: str = "small", name: str = "demo",
        **params: Any) -> bytes:
    return yaml.safe_dump({
        "name": name,
        "version": version,
        "runtime": {"env": {"SERVER_FLAVOR": flavor}},
        "model": {"uri": f"file:///srv/models/{name}/{version}",
                  "parameters": {"temperature": temperature, **params}},
        "metadata": {"model_id": f"{name}-{version}", "training_data_version": "ds-1",
                     "metrics": {"accuracy": 0.9}},
    }).encode()


class Env(ServedDaemon):
    """A models directory, a real example server and a daemon watching the directory."""

    def __init__(self, tmp: Path) -> None:
        self.models = tmp / "models"
        self.models.mkdir()
        super().__init__(tmp, {"kind": "localdir", "path": str(self.models), "resync_interval": 5})

    def write(self, content: bytes, name: str = "demo", suffix: str = ".yaml") -> str:
        """Write atomically like an editor doing save-by-rename; return the revision."""
        from watcher.sources.localdir import revision_of

        path = self.models / f"{name}{suffix}"
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.close()
