"""The example model server (examples/model_server.py) as a real subprocess on a free port."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import ROOT, Proc, free_port, http_ok, wait_until

SCRIPT = ROOT / "examples" / "model_server.py"


class ModelServer:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.pidfile = tmp / "model_server.pid"
        self.log = tmp / "model_server.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def start(self) -> ModelServer:
        self.proc = Proc([sys.executable, str(SCRIPT), "serve", "--port", str(self.port),
                          "--pidfile", str(self.pidfile)], self.log)
        wait_until(lambda: http_ok(self.url + "/health"), 10, "the example model server")
        return self

    def restart_argv(self) -> list[str]:
        """The `command` runtime's start argv for this server."""
        return ["{python}", str(SCRIPT), "restart", "--port", str(self.port), "--pidfile",
                str(self.pidfile), "--log", str(self.log)]

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/config", timeout=5).json()
        return data

    def pid(self) -> int:
        return int(self.pidfile.read_text())

    def stop(self) -> None:
        import contextlib
        import os
        import signal

        if self.proc is not None:
            self.proc.stop()
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(self.pid(), signal.SIGTERM)

    def settings(self) -> dict[str, Any]:
        """Daemon settings sections wiring this server as target, runtime and health."""
        return {
            "target": {"kind": "http", "url": self.url + "/admin/reload",
                       "remove_url": self.url + "/admin/models/{model}", "timeout": 5},
            "runtime": {"kind": "command", "start": self.restart_argv(), "health_url": self.url,
                        "timeout": 30},
            "health": {"url": self.url + "/health", "period": 0.1, "failure_threshold": 5,
                       "latency_ms": 1000},
            # the example server's restart-class knob (a host process: names are allowlisted)
            "policy": {"env": {"allow": ["SERVER_FLAVOR"]}},
        }
