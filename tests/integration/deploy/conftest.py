"""Fixtures for the deploy area: the sidecar images (built once per session) and helpers.

The images are built by tests/infra/sidecar.py from the project's own Containerfile; every
container and volume a test creates is named `mwt-PID-...` and removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.common import free_port, wait_until
from tests.infra.daemon import DaemonHarness
from tests.infra.model_server import ModelServer
from tests.infra.podman import PodmanEnv
from tests.infra.sidecar import SidecarImages


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarImages]:
    built = SidecarImages(tmp_path_factory.mktemp("sidecar"))
    built.remove_stale()
    try:
        yield built
    finally:
        built.remove_test_images()
        print(f"\nsidecar image timings: {built.timings}")


def model_doc(version: str, temperature: float, name: str = "example") -> bytes:
    return yaml.safe_dump({
        "name": name, "version": version,
        "model": {"uri": f"file:///srv/models/{name}/{version}",
                  "parameters": {"temperature": temperature}},
        "metadata": {"model_id": f"{name}-{version}"},
    }).encode()


def names(prefix: str) -> str:
    return f"mwt-{os.getpid()}-{prefix}"


def podman(env: PodmanEnv, *args: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([env.binary, *args], env={**os.environ, **env.env}, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return proc


def container_status(env: PodmanEnv, container: str) -> dict[str, Any]:
    """`model-watcher status --json` inside the running sidecar."""
    out = podman(env, "exec", container, "model-watcher", "status", "--json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def wait_healthy(env: PodmanEnv, container: str, timeout: float = 60) -> None:
    """Run the image's HEALTHCHECK (podman runs none by itself without systemd) until it
    passes; the container's health state must then say so."""

    def healthy() -> bool:
        return podman(env, "healthcheck", "run", container, check=False).returncode == 0

    try:
        wait_until(healthy, timeout, f"{container}'s HEALTHCHECK to pass", interval=0.5)
    except TimeoutError as exc:
        logs = podman(env, "logs", "--tail", "40", container, check=False)
        raise AssertionError(f"{exc}\n{logs.stdout}{logs.stderr}") from None
    state = podman(env, "inspect", container, "--format", "{{.State.Health.Status}}").stdout
    assert state.strip() == "healthy", state


def remove(env: PodmanEnv, *containers: str, volumes: tuple[str, ...] = ()) -> None:
    for c in containers:
        podman(env, "rm", "--force", "--time", "5", c, check=False)
    for v in volumes:
        podman(env, "volume", "rm", "--force", v, check=False)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A localdir source readable by the image's user (uid 10001)."""
    d = tmp_path / "models"
    d.mkdir()
    d.chmod(0o755)
    return d


# -- a real daemon's /metrics ---------------------------------------------------------------
#: what happened just before each scrape
SCENARIO = ("applied", "rejected", "failed", "applied again", "source down")


@pytest.fixture(scope="session")
def daemon_scrapes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """A real daemon (`[api] enabled = true`) driven through SCENARIO against the example
    model server; /metrics scraped after each step: [(step, exposition text)]."""
    tmp = tmp_path_factory.mktemp("scraped-daemon")
    models = tmp / "models"
    models.mkdir()
    server = ModelServer(tmp / "server").start()
    port = free_port()
    settings = {**server.settings(),
                "source": {"kind": "localdir", "path": str(models), "check_interval": 0.3,
                           "max_backoff": 0.5},
                "api": {"enabled": True, "port": port}}
    settings.pop("runtime")
    daemon = DaemonHarness(tmp / "daemon", settings)
    scrapes: list[tuple[str, str]] = []

    def scrape(step: str) -> None:
        scrapes.append((step, httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text))

    def write(doc: bytes) -> str:
        from watcher.sources.localdir import revision_of

        (models / "demo.yaml").write_bytes(doc)
        return revision_of(doc)

    try:
        r1 = write(model_doc("v1.0.0", 0.7, name="demo"))
        daemon.start()
        daemon.wait_applied("demo", r1)
        scrape("applied")
        daemon.wait_outcome("demo", write(b"name: demo\nversion: [unclosed\n"), "rejected")
        scrape("rejected")
        failing = yaml.safe_load(model_doc("v1.0.1", 0.9, name="demo"))
        failing["model"]["parameters"]["fail_health"] = True
        daemon.wait_outcome("demo", write(yaml.safe_dump(failing).encode()), "failed")
        scrape("failed")
        daemon.wait_applied("demo", write(model_doc("v1.1.0", 0.5, name="demo")))
        scrape("applied again")
        models.rename(tmp / "models-gone")
        wait_until(lambda: daemon.status()["daemon"].get("source_up") is False, 30,
                   "the daemon to report its source down")
        scrape("source down")
    finally:
        daemon.stop()
        server.stop()
    assert [s for s, _ in scrapes] == list(SCENARIO)
    return scrapes
