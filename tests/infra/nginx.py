"""Real nginx in front of the model containers, and a bounded load loop through it.

`Nginx(root, model)` runs `nginx -c FILE -p DIR` (master + one worker, no daemonizing) with
a config that includes the managed upstream file `upstreams/{model}.conf` (a placeholder
until the runtime writes it) and logs in the runtime's JSON format to `access-{model}.log`.
`LoadLoop` sends GETs to 127.0.0.1 only, from a thread, bounded in count and time, over a
kept-alive connection like a real client, and counts every request that did not get a 200.
Like browsers and Go's net/http, it re-sends a GET once when a kept-alive connection was
closed before any response came back (nginx closes idle keep-alive connections of old
workers on every reload; RFC 9112 section 9.3.1); those are counted in `stale_retries`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import Proc, free_port, require_binary, wait_until
from watcher.routers.nginx import log_format_name

HINT = "Debian package nginx (scripts/deps/40-containers.sh)"

CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_shutdown_timeout 10s;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include {root}/upstreams/*.conf;
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        access_log {root}/access-{model}.log {log_format};
        location / {{
            proxy_pass http://{model};
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""
PLACEHOLDER = "log_format {log_format} '-';\nupstream {model} {{ server 127.0.0.1:9 down; }}\n"


class Nginx:
    def __init__(self, root: Path, model: str) -> None:
        self.binary = require_binary("nginx", HINT)
        self.root = root
        self.model = model
        self.port = free_port()
        for d in ("upstreams", "tmp"):
            (root / d).mkdir(parents=True, exist_ok=True)
        fmt = log_format_name(model)
        self.conf = root / "nginx.conf"
        self.conf.write_text(CONF.format(root=root, port=self.port, model=model, log_format=fmt))
        self.upstream_file.write_text(PLACEHOLDER.format(log_format=fmt, model=model))
        self.proc: Proc | None = None

    @property
    def upstream_file(self) -> Path:
        return self.root / "upstreams" / f"{self.model}.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def options(self) -> dict[str, Any]:
        """The runtime's `nginx` options for this instance (paths templated by {model})."""
        return {
            "upstream_file": str(self.root / "upstreams" / "{model}.conf"),
            "upstream": "{model}",
            "binary": self.binary,
            "conf": str(self.conf),
            "prefix": str(self.root),
            "pid_file": str(self.root / "nginx.pid"),
            "access_log": str(self.root / "access-{model}.log"),
        }

    def start(self, timeout: float = 20) -> Nginx:
        self.proc = Proc([self.binary, "-c", str(self.conf), "-p", str(self.root)],
                         self.root / "nginx.out")
        wait_until(self._ready, timeout, f"nginx on {self.url}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"nginx exited:\n{self.proc.output()[-2000:]}")
        httpx.get(self.url, timeout=1)
        return (self.root / "nginx.pid").exists()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    bodies: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    #: GETs re-sent once because a kept-alive connection closed before any response
    #: (RFC 9112 9.3.1): nginx closes idle keep-alive connections of old workers on reload.
    stale_retries: int = 0

    @property
    def ok(self) -> int:
        return self.sent - self.failed

    def summary(self) -> str:
        return (f"{self.sent} requests in {self.seconds:.1f}s, {self.failed} failed "
                f"{dict(self.errors)}, {self.stale_retries} stale keep-alive re-sends")


class LoadLoop:
    """GET `url` back to back (at most `max_requests`, at most `max_seconds`) until stopped."""

    def __init__(self, url: str, max_requests: int = 20000, max_seconds: float = 120,
                 pause: float = 0.002) -> None:
        if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
            raise ValueError("load only ever goes to loopback")
        self.url = url
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-loop", daemon=True)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        wait_until(lambda: self.result.sent >= 5, 10, "the load loop's first requests")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(self.max_seconds + 10)
        return self.result

    def _run(self) -> None:
        started = time.monotonic()
        r = self.result
        with httpx.Client(timeout=5) as client:
            while (not self._stop.is_set() and r.sent < self.max_requests
                   and time.monotonic() - started < self.max_seconds):
                r.sent += 1
                try:
                    try:
                        resp = client.get(self.url)
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        r.stale_retries += 1  # closed before any response: safe to resend
                        resp = client.get(self.url)
                    if resp.status_code == 200:
                        r.bodies[resp.text.strip()] += 1
                    else:
                        r.failed += 1
                        r.errors[f"HTTP {resp.status_code}"] += 1
                except httpx.HTTPError as exc:
                    r.failed += 1
                    r.errors[type(exc).__name__] += 1
                if self.pause:
                    time.sleep(self.pause)
        r.seconds = time.monotonic() - started
