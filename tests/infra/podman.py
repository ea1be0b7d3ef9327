"""Podman's Docker-compatible Engine API on a unix socket in a temp dir, for the tests.

Everything podman reads comes from files of the test's own (CONTAINERS_CONF,
CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF): the containers.conf that works on
these machines (runc, cgroupfs, ulimits; see shared TEST-SERVICES.md), storage in the temp
dir, and a registries.conf marking the test registry insecure. `cli()` runs the podman
command line against the same storage (or against a separate build storage, so the engine
under test only ever holds what it pulled). `stop()` removes every container first, so no
conmon or container process outlives the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.infra.common import Proc, require_binary, wait_until
from tests.infra.engine_api import EngineAPI

HINT = "Debian packages podman, runc, uidmap (scripts/deps/40-containers.sh)"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
"""


class PodmanEnv:
    """Config files and storage for one podman storage root (engine or build side)."""

    def __init__(self, root: Path, insecure: Sequence[str] = ()) -> None:
        self.binary = require_binary("podman", HINT)
        require_binary("runc", HINT)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF.format(dir=root))
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/storage"\n'
            f'runroot = "{root}/run"\n'
        )
        reg = ["unqualified-search-registries = []"]
        for location in insecure:
            reg += ["[[registry]]", f'location = "{location}"', "insecure = true"]
        (root / "registries.conf").write_text("\n".join(reg) + "\n")

    @property
    def env(self) -> dict[str, str]:
        return {
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
            "TMPDIR": str(self._tmp()),
        }

    def _tmp(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        return tmp

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run([self.binary, *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()[-800:]}")
        return proc.stdout


class PodmanService:
    """`podman system service` serving the Engine API on `socket` until `stop()`."""

    def __init__(self, root: Path, insecure: Sequence[str] = ()) -> None:
        self.env = PodmanEnv(root, insecure)
        self.socket = root / "podman.sock"
        self.api = EngineAPI("podman", self.socket)
        self.proc: Proc | None = None

    def start(self, timeout: float = 30) -> PodmanService:
        self.proc = Proc([self.env.binary, "system", "service", "--time=0",
                          f"unix://{self.socket}"], self.env.root / "service.log",
                         env=self.env.env)
        wait_until(self._ready, timeout, f"podman service on {self.socket}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"podman system service exited:\n{self.proc.output()[-2000:]}")
        if not self.socket.exists():
            return False
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), timeout=2) as c:
            return c.get("http://d/_ping").text == "OK"

    def containers(self, label: str) -> list[str]:
        """Names of all containers (any state) carrying `label` (key or key=value)."""
        out = self.env.cli("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}")
        return [n for n in out.split() if n]

    def stop(self) -> None:
        if self.proc is None:
            return
        self.env.cli("rm", "--all", "--force", "--time", "0", check=False)
        self.proc.stop()
        self.proc = None
        self.env.cli("system", "prune", "--all", "--force", check=False)
        shutil.rmtree(self.env.root / "storage", ignore_errors=True)
