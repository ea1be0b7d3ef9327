"""Real servers for the weights tests, once per session: the private registry (basic auth),
nginx serving files, s3proxy, and MLServer with two tiny models (y = 2x, y = 3x)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.artifacts import StaticNginx
from tests.infra.common import ROOT
from tests.infra.daemon import to_toml
from tests.infra.mlserver import MLServer, running_mlserver, train_models
from tests.infra.registry import Registry
from tests.infra.s3proxy import S3Proxy


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticNginx]:
    server = StaticNginx(tmp_path_factory.mktemp("nginx")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Proxy]:
    server = S3Proxy(tmp_path_factory.mktemp("s3proxy")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_models(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory, trained: tuple[Path, Path]) -> Iterator[MLServer]:
    with running_mlserver(tmp_path_factory.mktemp("mlserver")) as server:
        yield server


def weights_settings(registry: Registry | None = None, s3: S3Proxy | None = None,
                     **extra: Any) -> dict[str, Any]:
    """The `[weights]` section for these servers (fast retries: tests wait on them)."""
    out: dict[str, Any] = {"attempts": 3, "backoff_initial": 0.1, "backoff_max": 0.5,
                           "read_timeout": 10.0, **extra}
    if registry is not None:
        out["insecure_registries"] = [registry.address]
        out["credentials"] = [{"host": registry.address, "username": registry.username,
                               "password": registry.password}]
    if s3 is not None:
        out["s3"] = s3.weights_settings()
    return out


def push_weights(tmp: Path, registry: Registry, path: Path, ref: str,
                 key: Path | None = None) -> dict[str, str]:
    """Run `model-watcher push-weights` (the publisher's command); its printed fields."""
    config = tmp / f"push-{abs(hash(ref))}.toml"
    config.write_text(to_toml({"state_dir": str(tmp / "push-state"),
                               "weights": weights_settings(registry)}))
    argv = [sys.executable, "-m", "watcher", "--config", str(config), "push-weights", str(path),
            f"oci://{registry.address}/{ref}"]
    if key is not None:
        argv += ["--key", str(key)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    fields = {}
    for line in out.stdout.splitlines():
        with contextlib.suppress(ValueError):
            k, v = line.split(": ", 1)
            fields[k] = v
    fields["stderr"] = out.stderr
    return fields
