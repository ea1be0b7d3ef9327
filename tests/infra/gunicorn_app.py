"""A gunicorn app whose workers read a config file when they start, so SIGHUP = new config.

gunicorn answers SIGHUP by starting new workers (which read the file again) and letting the
old ones finish their requests: the reload the `signal` target relies on. This module is
both the gunicorn config (`-c python:tests.infra.gunicorn_app`, for the `post_worker_init`
hook) and the WSGI app (`tests.infra.gunicorn_app:app`). The file is the JSON the `signal`
target writes (`spec_file`); its path comes from $GUNICORN_APP_CONFIG.

`Gunicorn(tmp).start()` runs it on a free loopback port with a pidfile.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import ROOT, Proc, free_port, wait_until

CONFIG_ENV = "GUNICORN_APP_CONFIG"
_config: dict[str, Any] = {}
_loaded_by: int | None = None

# -- gunicorn config (read by the master) --------------------------------------------------
graceful_timeout = 10
timeout = 30


def post_worker_init(worker: Any) -> None:
    """In each new worker, before it takes requests: read the config file once."""
    global _loaded_by
    _config.clear()
    _config.update(json.loads(Path(os.environ[CONFIG_ENV]).read_text()))
    _loaded_by = os.getpid()


# -- the WSGI app (run by the workers) -----------------------------------------------------
def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if _loaded_by != os.getpid():  # never serve a config this worker did not read itself
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"config not loaded in this worker\n"]
    body = json.dumps({"version": _config.get("version"), "pid": os.getpid(),
                       "model": _config.get("model")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class Gunicorn:
    """gunicorn with 2 sync workers; `stop()` promises master and workers are gone."""

    def __init__(self, tmp: Path, config_file: Path, workers: int = 2) -> None:
        self.tmp, self.config_file, self.workers = tmp, config_file, workers
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pidfile = tmp / "gunicorn.pid"
        self.proc: Proc | None = None

    def start(self, timeout: float = 30) -> Gunicorn:
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:tests.infra.gunicorn_app",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                "--pid", str(self.pidfile), "tests.infra.gunicorn_app:app"]
        self.proc = Proc(argv, self.tmp / "gunicorn.log", cwd=ROOT,
                         env={CONFIG_ENV: str(self.config_file)})
        wait_until(self._up, timeout, f"gunicorn on {self.url}")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"gunicorn exited:\n{self.proc.output()[-3000:]}")
        try:
            return httpx.get(self.url, timeout=1).status_code == 200 and self.pidfile.exists()
        except httpx.HTTPError:
            return False

    def get(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url, timeout=5).json()
        return data

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=15)
