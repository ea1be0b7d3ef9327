"""CONTRACT TEST of the systemd runtime through the real daemon: restart in place, health gate,
and repair by restarting the previous spec. `systemctl` is a stand-in over real processes (fake_systemctl),
since systemd cannot run as PID 1 on these machines; the model server is a real busybox httpd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.infra.common import free_port, require_binary, wait_until
from tests.infra.daemon import DaemonHarness
from watcher.core.childenv import EnvPolicy
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext
from watcher.runtimes.systemd import SystemdRuntime, parse_env, render_env
from watcher.sources.localdir import revision_of

FAKE = Path(__file__).with_name("fake_systemctl.py")
SERVER = ('D="$STATE_DIRECTORY/www"; mkdir -p "$D"; echo "$MODEL_WATCHER_VERSION" > "$D/version";'
          ' if [ "$HEALTHY" != 0 ]; then echo ok > "$D/health"; else rm -f "$D/health"; fi;'
          ' exec busybox httpd -f -p "127.0.0.1:$PORT" -h "$D"')


class Unit:
    def __init__(self, root: Path, name: str) -> None:
        require_binary("busybox", "Debian package busybox-static (scripts/deps/40-containers.sh)")
        self.root, self.name, self.port = root, name, free_port()
        (root / "units").mkdir(parents=True)
        self.env_file = root / f"{name}.env"
        (root / "units" / f"{name}.service.json").write_text(json.dumps({
            "exec": ["sh", "-c", f"PORT={self.port} STATE_DIRECTORY={root} {SERVER}"],
            "env_file": str(self.env_file),
        }))
        self.url = f"http://127.0.0.1:{self.port}"

    def options(self) -> dict[str, object]:
        return {"systemctl": [sys.executable, str(FAKE), str(self.root)],
                "env_file": str(self.root / "{model}.env"), "base_url": self.url, "timeout": 20}

    def version(self) -> str:
        return httpx.get(self.url + "/version", timeout=2).text.strip()

    def stop(self) -> None:
        pid_file = self.root / f"{self.name}.service.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = Unit(tmp_path / "systemd", "qwen")
    yield u
    u.stop()


def doc(version: str, healthy: bool = True) -> bytes:
    return yaml.safe_dump({"name": "qwen", "version": version,
                           "runtime": {"env": {"HEALTHY": "1" if healthy else "0"},
                                       "args": ["--port", "8000"]},
                           "model": {"uri": f"file:///srv/models/qwen/{version}"}}).encode()


def test_env_file_round_trip() -> None:
    spec = ModelSpec.model_validate({"name": "qwen", "version": "v1.0.0", "model": {"uri": "x"},
                                     "runtime": {"env": {"A": 'say "hi" \\o/'}, "args": ["-v"]}})
    env = parse_env(render_env(spec, "rev1", EnvPolicy(allow=("A",))))
    assert env["A"] == 'say "hi" \\o/'
    assert env["MODEL_WATCHER_REVISION"] == "rev1"
    assert json.loads(env["MODEL_WATCHER_ARGS"]) == ["-v"]


async def test_unknown_unit_is_refused_by_prepare(unit: Unit, tmp_path: Path) -> None:
    from watcher.core.errors import RuntimeStartError

    rt = SystemdRuntime.create({**unit.options(), "unit": "nope.service"},
                               PluginContext(state_dir=tmp_path, environment="test"))
    spec = ModelSpec.model_validate({"name": "qwen", "version": "v1.0.0", "model": {"uri": "x"}})
    with pytest.raises(RuntimeStartError, match="not-found"):
        await rt.prepare(spec)
    assert await rt.instances("qwen") == []


def test_daemon_restarts_the_unit_and_repairs_a_failed_gate(unit: Unit, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()

    def publish(content: bytes) -> str:
        (models / ".qwen.yaml.swp").write_bytes(content)
        (models / ".qwen.yaml.swp").replace(models / "qwen.yaml")
        return revision_of(content)

    daemon = DaemonHarness(tmp_path / "daemon", {
        "source": {"kind": "localdir", "path": str(models)},
        "runtime": {"kind": "systemd", **unit.options()},
        "health": {"period": 0.1, "failure_threshold": 20, "latency_ms": 2000},
        "policy": {"env": {"allow": ["HEALTHY"]}},
    })
    try:
        r1 = publish(doc("v1.0.0"))
        daemon.start()
        daemon.wait_applied("qwen", r1, 60)
        assert unit.version() == "v1.0.0"
        assert parse_env(unit.env_file.read_text())["MODEL_WATCHER_REVISION"] == r1

        r2 = publish(doc("v1.1.0", healthy=False))
        row = daemon.wait_outcome("qwen", r2, "failed", 60)
        assert "health" in (row.get("reason") or "")
        wait_until(lambda: unit.version() == "v1.0.0", 30, "v1.0.0 restarted after the failure")
        assert httpx.get(unit.url + "/health", timeout=2).status_code == 200
        assert daemon.status()["models"]["qwen"]["applied_revision"] == r1

        r3 = publish(doc("v1.2.0"))
        daemon.wait_applied("qwen", r3, 60)
        assert unit.version() == "v1.2.0"
    finally:
        daemon.stop()
