"""The daemon as the documented systemd service, under a real systemd 252 as PID 1.

One booted container per session (tests/infra/systemd_host.py), the project installed in it
by systemd/install.sh; each test gets `mw`: a clean service (stopped, state wiped, its
runtime drop-in and test drop-ins removed), a models directory shared with the host
(/srv/mw-test/models-N, the localdir source) and helpers to write settings and publish.
Nothing here skips: a host that cannot boot systemd fails the tests.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.common import free_port, wait_until
from tests.infra.daemon import to_toml
from tests.infra.systemd_host import CONFIG, EXCHANGE, Distribution, SystemdHost, SystemdImage
from watcher.sources.localdir import revision_of

UNIT = "model-watcher.service"
TEST_DROPIN = f"/etc/systemd/system/{UNIT}.d/zz-test.conf"
_seq = itertools.count()


@pytest.fixture(scope="session")
def systemd_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdHost]:
    tmp = tmp_path_factory.mktemp("systemd-host")
    t0 = time.monotonic()
    image = SystemdImage()
    host = SystemdHost(tmp, image, Distribution(tmp))
    try:
        host.start()
        t_boot = time.monotonic()
        host.install("none")
        timings = {**image.timings, "session setup": time.monotonic() - t0,
                   "install.sh": time.monotonic() - t_boot}
        print("systemd host: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        yield host
    finally:
        host.stop()


def doc(version: str = "v1.0.0", name: str = "demo", runtime: dict[str, Any] | None = None,
        **params: Any) -> bytes:
    body: dict[str, Any] = {"name": name, "version": version,
                            "model": {"uri": f"file:///srv/models/{name}/{version}",
                                      "parameters": {"temperature": 0.7, **params}}}
    if runtime:
        body["runtime"] = runtime
    return yaml.safe_dump(body).encode()


class Service:
    """model-watcher.service inside `host`, configured and observed by one test."""

    def __init__(self, host: SystemdHost) -> None:
        self.host = host
        n = next(_seq)
        self.models = host.exchange / f"models-{n}"
        self.models.mkdir()
        self.models.chmod(0o755)
        self.models_inside = f"{EXCHANGE}/models-{n}"
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"

    def reset(self) -> None:
        h = self.host
        h.sh(f"systemctl stop {UNIT} model-watcher-once.timer model-watcher-once.service; "
             f"systemctl reset-failed {UNIT} model-watcher-once.service; "
             f"rm -f {TEST_DROPIN} /etc/systemd/system/model-watcher*.d/runtime.conf "
             "/etc/systemd/system/model-watcher-once.timer.d/zz-test.conf; "
             "rm -rf /var/lib/model-watcher/* /var/lib/model-watcher/.[!.]*; "
             "systemctl daemon-reload", check=False)

    def settings(self, **sections: Any) -> dict[str, Any]:
        """Write /etc/model-watcher/watcher.toml (root:model-watcher 0640, as installed)."""
        base: dict[str, Any] = {
            "state_dir": "/var/lib/model-watcher",
            "environment": "staging",
            "source": {"kind": "localdir", "path": self.models_inside},
            "reconcile": {"wait_min": 0.05, "wait_max": 0.5, "shutdown_grace": 10.0},
            "api": {"enabled": True, "port": self.api_port},
            # what the tests' documents set in runtime.env (default: nothing is admitted)
            "policy": {"env": {"allow": ["SERVER_*", "PORT"]}},
        }
        for key, value in sections.items():
            if value is None:
                base.pop(key, None)
            else:
                base[key] = value
        self.host.write(CONFIG, to_toml(base), mode="0640", owner="root:model-watcher")
        return base

    def test_dropin(self, text: str) -> None:
        """A drop-in of the test's own (shorter watchdog/restart delays), then daemon-reload."""
        self.host.write(TEST_DROPIN, text)
        self.host.systemctl("daemon-reload")

    def publish(self, content: bytes, name: str = "demo") -> str:
        tmp = self.models / f".{name}.yaml.tmp"
        tmp.write_bytes(content)
        tmp.chmod(0o644)
        tmp.replace(self.models / f"{name}.yaml")
        return revision_of(content)

    def show(self, *props: str) -> dict[str, str]:
        return self.host.show(UNIT, *props)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.api + "/status", timeout=5).json()
        return data

    def applied(self, model: str = "demo") -> str | None:
        try:
            rev = self.status()["models"].get(model, {}).get("applied_revision")
        except (httpx.HTTPError, ValueError):
            return None
        return str(rev) if rev else None

    def wait_applied(self, revision: str, model: str = "demo", timeout: float = 60) -> None:
        wait_until(lambda: self.applied(model) == revision, timeout,
                   f"{model}@{revision[:12]} applied", interval=0.2)

    def history(self, model: str = "demo") -> list[dict[str, Any]]:
        import json

        rows: list[dict[str, Any]] = json.loads(self.host.cli("history", model, "--json"))
        return rows

    def wait_outcome(self, revision: str, outcome: str, model: str = "demo",
                     timeout: float = 60) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for row in self.history(model):
                if row.get("revision") == revision and row.get("outcome") == outcome:
                    return row
            return None

        row = wait_until(found, timeout, f"{model}@{revision[:12]} {outcome}", interval=0.5)
        assert isinstance(row, dict)
        return row


@pytest.fixture
def mw(systemd_host: SystemdHost) -> Iterator[Service]:
    svc = Service(systemd_host)
    svc.reset()
    yield svc
    svc.reset()


def main_pid(svc: Service) -> int:
    return int(svc.show("MainPID")["MainPID"])
