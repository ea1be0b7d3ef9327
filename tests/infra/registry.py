"""A private image registry (Debian `docker-registry`) on loopback with htpasswd basic auth.

The bcrypt htpasswd file is written with python `bcrypt`; readiness is polled on /v2/
(which answers 401 without credentials once the registry is up).
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import httpx

from tests.infra.common import Proc, free_port, require_binary, wait_until

HINT = "Debian package docker-registry (scripts/deps/40-containers.sh)"

CONFIG = """\
version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {root}/data}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{port}"}}
auth:
  htpasswd: {{realm: model-watcher-test, path: {root}/htpasswd}}
"""


class Registry:
    def __init__(self, root: Path, username: str = "mw", password: str = "s3cret-registry-pw") -> None:
        self.binary = require_binary("docker-registry", HINT)
        self.root = root
        self.username = username
        self.password = password
        self.port = free_port()
        self.proc: Proc | None = None
        root.mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        (root / "htpasswd").write_text(f"{username}:{hashed}\n")
        (root / "config.yml").write_text(CONFIG.format(root=root, port=self.port))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Registry:
        self.proc = Proc([self.binary, "serve", str(self.root / "config.yml")],
                         self.root / "registry.log")
        wait_until(self._ready, timeout, f"docker-registry on {self.address}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"docker-registry exited:\n{self.proc.output()[-2000:]}")
        return httpx.get(f"http://{self.address}/v2/", timeout=1).status_code == 401

    def manifest_digest(self, repo: str, tag: str) -> str:
        """The registry's own digest for repo:tag (Docker-Content-Digest)."""
        accept = ("application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")
        resp = httpx.head(f"http://{self.address}/v2/{repo}/manifests/{tag}",
                          auth=(self.username, self.password), headers={"Accept": accept})
        resp.raise_for_status()
        return resp.headers["Docker-Content-Digest"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
