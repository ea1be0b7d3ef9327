"""examples/compose/ for real: `podman-compose up` starts etcd, the example model server and
model-watcher as its sidecar (images built from the project's own files, see
tests/infra/sidecar.py); a document published to that etcd with `model-watcher publish`
(compare-and-swap, as examples/compose/publisher.toml says) is served by the model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.infra.common import ROOT, free_port, http_ok, wait_until
from tests.infra.sidecar import SidecarImages
from tests.integration.deploy.conftest import container_status, names, podman, wait_healthy

COMPOSE_DIR = ROOT / "examples" / "compose"
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"  # the dev group (uv.lock)


class Project:
    """One `podman-compose -p NAME` project of the example, with ports of its own."""

    def __init__(self, images: SidecarImages) -> None:
        self.images = images
        self.name = names("compose")
        self.ports = {k: free_port() for k in ("MW_ETCD_PORT", "MW_SERVER_PORT", "MW_API_PORT")}
        self.env = {**os.environ, **images.podman.env, **{k: str(v) for k, v in self.ports.items()},
                    "MW_IMAGE": images.watcher(), "MW_MODEL_SERVER_IMAGE": images.model_server(),
                    "MW_ETCD_IMAGE": images.etcd(), "MW_PYTHON_BASE": images.base()}

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(PODMAN_COMPOSE), "-p", self.name, "-f",
                               str(COMPOSE_DIR / "compose.yaml"), *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=COMPOSE_DIR)
        assert proc.returncode == 0, f"podman-compose {args}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc

    def container(self, service: str) -> str:
        out = podman(self.images.podman, "ps", "-a", "--format", "{{.Names}}", "--filter",
                     f"label=com.docker.compose.project={self.name}", "--filter",
                     f"label=com.docker.compose.service={service}").stdout.split()
        assert len(out) == 1, out
        return out[0]

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"


@pytest.fixture
def project(images: SidecarImages) -> Iterator[Project]:
    p = Project(images)
    try:
        yield p
    finally:
        subprocess.run([str(PODMAN_COMPOSE), "-p", p.name, "-f", str(COMPOSE_DIR / "compose.yaml"),
                        "down", "--volumes", "--timeout", "10"], env=p.env, capture_output=True,
                       timeout=300, cwd=COMPOSE_DIR)


def publish(project: Project, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`model-watcher publish` with examples/compose/publisher.toml, pointed at this
    project's etcd port through the environment (a JSON list, as the sidecar gets its own)."""
    env = {**os.environ, "MODEL_WATCHER_SOURCE__ENDPOINTS": json.dumps([project.url("MW_ETCD_PORT", "")]),
           "MODEL_WATCHER_STATE_DIR": str(tmp / "publisher-state")}
    return subprocess.run([sys.executable, "-m", "watcher", "--config", str(COMPOSE_DIR / "publisher.toml"),
                           "publish", *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_compose_example_applies_a_publish(project: Project, tmp_path: Path) -> None:
    project.compose("up", "-d")
    wait_until(lambda: http_ok(project.url("MW_ETCD_PORT", "/health")), 60, "etcd in the project")
    sidecar = project.container("model-watcher")
    wait_healthy(project.images.podman, sidecar, timeout=90)
    config = project.url("MW_SERVER_PORT", "/config")
    assert httpx.get(config, timeout=5).json()["spec"] is None

    first = publish(project, tmp_path, "example", str(COMPOSE_DIR / "example.yaml"), "--if-revision", "0")
    assert first.returncode == 0, first.stderr
    revision = first.stdout.strip()
    wait_until(lambda: (httpx.get(config, timeout=2).json()["spec"] or {}).get("version") == "v1.0.0",
               60, "the model server to serve the published document")
    assert httpx.get(config, timeout=2).json()["spec"]["model"]["parameters"]["temperature"] == 0.5
    model = container_status(project.images.podman, sidecar)["models"]["example"]
    assert (model["applied_revision"], model["last_outcome"]) == (revision, "applied")

    # a second create-only publish loses the compare-and-swap and writes nothing
    again = publish(project, tmp_path, "example", str(COMPOSE_DIR / "example.yaml"), "--if-revision", "0")
    assert again.returncode == 1 and "revision" in again.stderr, again.stderr
    metrics = httpx.get(project.url("MW_API_PORT", "/metrics"), timeout=5).text
    assert 'model_watcher_revisions_total{model="example",outcome="applied",reason="hot"} 1.0' in metrics
    assert "model_watcher_source_up 1.0" in metrics
    # the sidecar as the example declares it: non-root, read-only, in the server's namespace
    inspect = json.loads(podman(project.images.podman, "inspect", sidecar).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert inspect["Config"]["User"] == "10001:10001"
    assert inspect["HostConfig"]["NetworkMode"].startswith("container:"), inspect["HostConfig"]["NetworkMode"]
