"""The docker runtime under the hardened unit (install.sh --runtime docker --engine-group
podman), against Podman's Engine API socket and a root-owned nginx.service:

- blue/green behind nginx with zero failed requests (a request loop through nginx);
- nginx reloaded through `systemctl reload nginx` (polkit), its config tested by ExecReload;
- the drain ends when the connections of the old workers end (a slow request in flight on
  the old container finishes, with 200, before the replacement completes), not at
  drain_timeout, although ProtectProc=invisible hides the workers in /proc;
- without the drop-in's ReadWritePaths= the upstream file cannot be written: a clean failed
  switch, the new container discarded, the old one serving.

The engine is the host's podman service, its socket bind-mounted at /run/podman/podman.sock
and given the engine group as podman.socket's SocketGroup= would (install.sh's drop-in).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra.common import free_port
from tests.infra.images import BuiltImage, _context
from tests.infra.nginx import PLACEHOLDER, LoadLoop
from tests.infra.podman import PodmanEnv, PodmanService
from tests.infra.registry import Registry
from tests.infra.systemd_host import SystemdHost
from tests.integration.systemd.conftest import UNIT, Service, doc
from watcher.routers.nginx import log_format_name

SLOW_SECONDS = 6
SLOW_CGI = f"#!/bin/sh\nsleep {SLOW_SECONDS}\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n"
REPO = "mw/sd-model-server"
NGINX_SITE = """\
include /etc/nginx/model-watcher/*.conf;
server {{
    listen 127.0.0.1:{port};
    access_log /var/log/nginx/mw-{model}.log {log_format};
    location / {{
        proxy_pass http://{model};
        proxy_next_upstream error timeout http_502;
        proxy_connect_timeout 2s;
    }}
}}
"""


class Engine:
    """Registry, host podman service (socket shared with the booted system) and images."""

    def __init__(self, host: SystemdHost, tmp: Path) -> None:
        self.registry = Registry(tmp / "registry").start()
        self.podman = PodmanService(host.podman_run, insecure=[self.registry.address]).start()
        gid = int(host.sh("getent group podman | cut -d: -f3").stdout)
        os.chown(self.podman.socket, 0, gid)
        os.chmod(self.podman.socket, 0o660)
        self.builder = PodmanEnv(tmp / "build", insecure=[self.registry.address])
        self.images = {tag: self._build(tmp, tag) for tag in ("v1.0.0", "v1.1.0", "v1.2.0")}

    def _build(self, tmp: Path, tag: str) -> BuiltImage:
        ctx = _context(tmp / "contexts" / tag, tag, "good")
        cgi = ctx / "www" / "cgi-bin" / "slow.cgi"
        cgi.write_text(SLOW_CGI)
        cgi.chmod(0o755)
        ref = f"{self.registry.address}/{REPO}:{tag}"
        creds = f"{self.registry.username}:{self.registry.password}"
        self.builder.cli("build", "--quiet", "--tag", ref, str(ctx), timeout=300)
        self.builder.cli("push", "--quiet", "--creds", creds, "--tls-verify=false", ref, timeout=300)
        return BuiltImage(ref, tag, "good", self.registry.manifest_digest(REPO, tag))

    def running(self, model: str) -> list[str]:
        out = self.podman.env.cli("ps", "--filter", f"label=model-watcher.model={model}",
                                  "--format", "{{.Names}}")
        return out.split()

    def stop(self) -> None:
        self.podman.stop()
        self.builder.cli("system", "prune", "--all", "--force", check=False)
        self.registry.stop()


@pytest.fixture
def engine(mw: Service, tmp_path: Path) -> Iterator[Engine]:
    mw.host.install("docker", engine_group="podman")
    e = Engine(mw.host, tmp_path)
    yield e
    mw.host.systemctl("stop", UNIT, check=False)
    e.stop()


def start_nginx(host: SystemdHost, model: str) -> str:
    port = free_port()
    fmt = log_format_name(model)
    host.write("/etc/nginx/conf.d/mw-test.conf", NGINX_SITE.format(port=port, model=model, log_format=fmt))
    host.write(f"/etc/nginx/model-watcher/{model}.conf", PLACEHOLDER.format(log_format=fmt, model=model),
               owner="model-watcher:root")
    host.systemctl("restart", "nginx.service")
    return f"http://127.0.0.1:{port}"


def test_blue_green_behind_a_root_nginx_under_the_unit(mw: Service, engine: Engine) -> None:
    host = mw.host
    front = start_nginx(host, "demo")
    mw.settings(
        runtime={"kind": "docker", "socket": "/run/podman/podman.sock",
                 "registry_auth": {"username": engine.registry.username,
                                   "password": engine.registry.password},
                 "ports": [23000, 23999], "stop_timeout": 5, "pull_timeout": 60},
        router={"kind": "nginx", "upstream_file": "/etc/nginx/model-watcher/{model}.conf",
                "unit": "nginx.service", "access_log": "/var/log/nginx/mw-{model}.log",
                "drain_timeout": 60, "steps": [50, 100]},
        health={"path": "/health", "period": 0.1, "failure_threshold": 50, "latency_ms": 1000})
    score = host.sh("systemd-analyze security --no-pager model-watcher.service | tail -1").stdout
    print(f"with runtime-docker.conf: {score.strip()}")

    def publish(tag: str, **env: str) -> str:
        return mw.publish(doc(tag, runtime={"image": engine.images[tag].ref, "env": env}))

    rev1 = publish("v1.0.0")
    host.systemctl("start", UNIT)
    mw.wait_applied(rev1)
    assert httpx.get(front + "/version", timeout=5).text.strip() == "v1.0.0"
    old = engine.running("demo")
    assert len(old) == 1

    # blue/green under load, with a slow request in flight on the old container
    cursor = host.cursor()
    slow: dict[str, Any] = {}

    def slow_request() -> None:
        slow["response"] = httpx.get(front + "/cgi-bin/slow.cgi", timeout=30)
        slow["done"] = time.monotonic()

    with LoadLoop(front + "/version", max_seconds=120) as load:
        t = threading.Thread(target=slow_request)
        t.start()  # in flight on the old container: the pull and start come first
        rev2 = publish("v1.1.0")
        mw.wait_applied(rev2, timeout=90)
        applied_at = time.monotonic()
        t.join(30)
    result = load.stop()
    print(f"docker runtime under the unit, blue/green: {result.summary()}")
    assert result.failed == 0, result.summary()
    assert result.bodies.get("v1.1.0", 0) > 0
    assert slow["response"].status_code == 200 and slow["response"].text == "slow\n"
    assert httpx.get(front + "/version", timeout=5).text.strip() == "v1.1.0"
    new = engine.running("demo")
    assert len(new) == 1 and new != old
    # the first reload's drain waited for the slow request: the replacement completed after it
    assert slow["done"] <= applied_at, (slow["done"], applied_at)
    log = host.messages(UNIT, cursor)
    assert "still running after" not in log, log  # no drain ran into drain_timeout (60 s)
    drains = [float(m) for m in re.findall(r"previous workers exited (\d+\.\d+)s", log)]
    print(f"drains (s): {drains}")
    assert drains and max(drains) < 60, log
    assert host.messages("nginx.service", cursor).count("Reloaded") >= 2

    # without ReadWritePaths= the upstream file is read-only: a clean failure
    mw.test_dropin("[Service]\nReadWritePaths=\n")
    host.systemctl("restart", UNIT)
    with LoadLoop(front + "/version", max_seconds=120) as load:
        rev3 = publish("v1.2.0")
        row = mw.wait_outcome(rev3, "failed", timeout=90)
    result = load.stop()
    assert "Read-only file system" in str(row.get("reason")), row
    assert engine.running("demo") == new  # the new container was discarded
    assert mw.applied() == rev2
    assert result.failed == 0, result.summary()
    assert httpx.get(front + "/version", timeout=5).text.strip() == "v1.1.0"
