"""Artifact servers for the weights tests: nginx serving a directory, and a cutting proxy.

`StaticNginx(root)` serves `root/www` on a free loopback port with sendfile, ranges and
ETags as a real internal artifact server does (`nginx -c FILE -p DIR`, no daemonizing).

`CutProxy(upstream_port)` is a TCP proxy on loopback that counts the bytes it relays
downstream and can cut every connection after `cut_after` bytes (a network cut in the
middle of a download) or throttle to `rate` bytes/s (so a download is slow enough to be
killed half way). It stands between the daemon and a real server, never instead of one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.infra.common import Proc, free_port, require_binary, wait_until

CONF = """\
{user}daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    sendfile on;
    log_format mw '$request_method $uri $status $body_bytes_sent "$http_range"';
    access_log {root}/access.log mw;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location /private/ {{ auth_basic "weights"; auth_basic_user_file {root}/htpasswd; }}
    }}
}}
"""


class StaticNginx:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.binary = require_binary("nginx", "Debian package nginx (scripts/deps/40-containers.sh)")
        self.root = root
        self.www = root / "www"
        for d in (self.www, root / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # as root, workers would run as nobody and could not read a test's 0700 temp dir
        user = "user root;\n" if os.geteuid() == 0 else ""
        (root / "nginx.conf").write_text(CONF.format(root=root, port=self.port, user=user))
        (root / "htpasswd").write_text("")
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StaticNginx:
        self.proc = Proc([self.binary, "-c", str(self.root / "nginx.conf"), "-p", str(self.root)],
                         self.root / "nginx.out")
        wait_until(lambda: httpx.get(self.url + "/", timeout=1).status_code in (200, 403, 404),
                   20, f"nginx on {self.url}")
        return self

    def requests(self) -> list[str]:
        """Access log lines: `GET /path status bytes "range"`."""
        log = self.root / "access.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class CutProxy:
    def __init__(self, upstream_port: int, *, cut_after: int | None = None,
                 rate: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.rate = rate
        self.relayed = 0  # bytes sent downstream, all connections
        self.connections = 0
        self.port = free_port()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="cut-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if downstream and self.cut_after is not None and sent + len(data) > self.cut_after:
                    data = data[: max(self.cut_after - sent, 0)]
                    dst.sendall(data)
                    self._count(len(data))
                    break  # the cut: both sides closed mid-body
                dst.sendall(data)
                sent += len(data)
                if downstream:
                    self._count(len(data))
                    if self.rate:
                        time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _count(self, n: int) -> None:
        with self._lock:
            self.relayed += n

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)
