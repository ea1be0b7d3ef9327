"""A small, real model server for the demo and the tests (stdlib only, no dependencies).

It "serves" a model described by a spec: GET /health, GET /config (what it serves now),
POST /v1/predict (answers with the model's version and parameters), POST /admin/reload
(hot swap: takes a spec JSON, like the daemon's `http` target sends), DELETE /admin/models/NAME.
Restart-class settings come from the environment at start (MODEL_WATCHER_SPEC_FILE,
SERVER_FLAVOR, ...), so changing them needs a restart: `restart` stops the running server
(pidfile) and starts a new one in the background, which is what the `command` runtime runs.

    python examples/model_server.py serve --port 8080 --pidfile /tmp/ms.pid
    python examples/model_server.py restart --port 8080 --pidfile /tmp/ms.pid --log /tmp/ms.log

Failure switches for tests: a spec whose model.parameters has `fail_health: true` makes
/health answer 503; `reject_reload: true` makes /admin/reload answer 422; `slow_health_ms`
delays /health.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATE: dict[str, Any] = {"spec": None, "started_at": time.time(), "reloads": 0,
                         "env": {k: v for k, v in os.environ.items() if k.startswith(("MODEL_", "SERVER_"))}}
LOCK = threading.Lock()


def _initial_spec() -> Any:
    path = os.environ.get("MODEL_WATCHER_SPEC_FILE")
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text())
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "example-model-server/1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per reload instead
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _params(self) -> dict[str, Any]:
        spec = STATE["spec"] or {}
        return dict((spec.get("model") or {}).get("parameters") or {})

    def do_GET(self) -> None:
        if self.path == "/health":
            params = self._params()
            if params.get("slow_health_ms"):
                time.sleep(float(params["slow_health_ms"]) / 1000)
            if params.get("fail_health"):
                self._send(503, {"status": "unhealthy"})
            else:
                self._send(200, {"status": "ok", "pid": os.getpid()})
        elif self.path == "/config":
            with LOCK:
                self._send(200, {**STATE, "pid": os.getpid()})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/admin/reload":
            try:
                spec = json.loads(body)
            except ValueError:
                self._send(400, {"error": "body is not JSON"})
                return
            if ((spec.get("model") or {}).get("parameters") or {}).get("reject_reload"):
                self._send(422, {"error": "model refused by the server"})
                return
            with LOCK:
                STATE["spec"] = spec
                STATE["reloads"] += 1
            print(f"reloaded {spec.get('name')} {spec.get('version')}", flush=True)
            self._send(200, {"status": "reloaded", "version": spec.get("version")})
        elif self.path == "/v1/predict":
            spec = STATE["spec"] or {}
            self._send(200, {"model": spec.get("name"), "version": spec.get("version"),
                             "parameters": self._params(), "pid": os.getpid()})
        else:
            self._send(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if self.path.startswith("/admin/models/"):
            with LOCK:
                STATE["spec"] = None
            self._send(200, {"status": "unloaded"})
        else:
            self._send(404, {"error": "not found"})


def serve(args: argparse.Namespace) -> int:
    STATE["spec"] = _initial_spec()
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.pidfile:
        Path(args.pidfile).write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    spec = STATE["spec"] or {}
    print(f"example model server on http://{args.host}:{args.port} pid {os.getpid()} "
          f"serving {spec.get('name')} {spec.get('version')}", flush=True)
    httpd.serve_forever()
    httpd.server_close()
    return 0


def restart(args: argparse.Namespace) -> int:
    """Stop the server in the pidfile, start a new one detached, wait until it listens."""
    pidfile = Path(args.pidfile)
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
        except (ValueError, ProcessLookupError):
            pass
    log = open(args.log, "ab") if args.log else subprocess.DEVNULL  # noqa: SIM115
    argv = [sys.executable, os.path.abspath(__file__), "serve", "--host", args.host,
            "--port", str(args.port), "--pidfile", str(pidfile)]
    child = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    import urllib.request

    # Success means the process we started answers: not an old one still holding the port.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if child.poll() is not None:
            print(f"the new server exited with status {child.returncode} (port {args.port} in use?)",
                  file=sys.stderr)
            return 1
        try:
            with urllib.request.urlopen(f"http://{args.host}:{args.port}/config", timeout=1) as resp:
                if json.load(resp).get("pid") == child.pid:
                    print(f"restarted on port {args.port} as pid {child.pid}")
                    return 0
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    print(f"the new server (pid {child.pid}) did not answer within 10 s", file=sys.stderr)
    child.terminate()
    return 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "restart"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=8080)
        s.add_argument("--pidfile", default="")
        s.add_argument("--log", default="")
    args = p.parse_args()
    return serve(args) if args.cmd == "serve" else restart(args)


if __name__ == "__main__":
    raise SystemExit(main())
