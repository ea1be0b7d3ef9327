"""A real systemd (252, Debian bookworm) as PID 1 in a podman container, for the unit's tests.

Recipe (docs/operations.md, "Testing under systemd"): `mmdebstrap` builds a root filesystem
from Debian's packages (PACKAGES), `podman import` makes it an image, and
`podman run --privileged --systemd=always --network=host ... /sbin/init` boots it. Host
networking lets the daemon inside reach servers the tests run on the host's loopback (the
example model server, the registry, the load loop's target) and lets the tests reach the
daemon's API and nginx inside. Without --privileged the unit's sandboxing fails with
226/NAMESPACE; the runc/cgroupfs/ulimit settings are the ones podman needs on these
machines (tests/infra/podman.py).

Cached under the test cache, keyed on the package list and the build hooks: the root
filesystem tarball and the podman storage holding the imported image
(CACHE/systemd-host/), and the wheels of the locked dependencies (keyed on their exported
requirements). A fresh machine pays mmdebstrap (about 1-3 min, mostly downloads), the
import (about 15 s) and the wheel download; a warm one only boots (about 3 s).

The project is installed inside exactly as docs/operations.md tells a user: the wheel and
requirements built on the host (`uv build`, `uv export`), then `systemd/install.sh`.
The container's name carries this process's pid; `stop()` removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.infra.common import CACHE, ROOT, wait_until
from tests.infra.rootfs_image import RootfsImage

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "polkitd", "nginx-light")
#: Run in the new root filesystem: nothing of it may listen on the host's network at boot.
HOOKS = (
    'chroot "$1" systemctl disable nginx.service',
    'rm -f "$1"/etc/nginx/sites-enabled/default',
    'chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer',
    'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
)
RUN_FLAGS = ("--privileged", "--systemd=always", "--network=host", "--runtime", "runc",
             "--cgroup-manager=cgroupfs", "--ulimit", "nofile=1024:1024",
             "--ulimit", "nproc=1024:1024")
#: Inside the container.
SRC, DIST, WHEELS, EXCHANGE, PODMAN_RUN = (
    "/src", "/mnt/dist", "/mnt/wheels", "/srv/mw-test", "/run/podman")
MW = "/opt/model-watcher/bin/model-watcher"
CONFIG = "/etc/model-watcher/watcher.toml"


def rootfs_key() -> str:
    return SystemdImage().key


class SystemdImage(RootfsImage):
    """The cached root filesystem, imported into a podman storage under the test cache."""

    def __init__(self, cache: Path = CACHE / "systemd-host") -> None:
        super().__init__(cache, "mw-systemd-host", PACKAGES, hooks=HOOKS, suite=SUITE)


class Distribution:
    """What a user builds from a checkout (docs/operations.md): the wheel and the locked
    requirements; plus a wheelhouse of those requirements, cached on their hash."""

    def __init__(self, tmp: Path, cache: Path = CACHE / "systemd-host") -> None:
        uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
        self.dist = tmp / "dist"
        self.dist.mkdir(parents=True, exist_ok=True)
        subprocess.run([uv, "build", "--wheel", "--quiet", "--out-dir", str(self.dist)],
                       cwd=ROOT, check=True, capture_output=True, timeout=300)
        self.requirements = self.dist / "requirements.txt"
        subprocess.run([uv, "export", "--frozen", "--no-dev", "--extra", "otel",
                        "--no-emit-project", "--no-hashes", "--quiet", "-o",
                        str(self.requirements)], cwd=ROOT, check=True, capture_output=True,
                       timeout=120)
        self.wheel = next(self.dist.glob("model_watcher-*.whl")).name
        pins = [line for line in self.requirements.read_text().splitlines()
                if line and not line.startswith("#")]  # the header names the temp path
        digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
        self.wheels = cache / f"wheels-{digest}"
        if not self.wheels.exists():
            for old in cache.glob("wheels-*"):
                shutil.rmtree(old, ignore_errors=True)
        self.wheels.mkdir(parents=True, exist_ok=True)
        self.uv = uv
        self.download_seconds = 0.0

    def download_wheels(self) -> None:
        """Binary wheels of the requirements for CPython 3.11 on glibc x86_64 (bookworm's
        python3 inside), downloaded on the host: the host holds the registry's trust
        settings, the booted system installs them with --no-index --find-links."""
        t0 = time.monotonic()
        subprocess.run([self.uv, "tool", "run", "--python", "3.11", "--from", "pip", "pip",
                        "download", "--quiet", "--only-binary=:all:", "--dest", str(self.wheels),
                        "-r", str(self.requirements)], check=True, capture_output=True, timeout=600)
        self.download_seconds = time.monotonic() - t0


class SystemdHost:
    """One booted container; commands run in it with `podman exec`."""

    def __init__(self, tmp: Path, image: SystemdImage, dist: Distribution) -> None:
        self.image = image
        self.dist = dist
        self.podman = image.podman
        self.name = f"mw-systemd-{os.getpid()}-{secrets.token_hex(3)}"
        self.exchange = tmp / "exchange"      # /srv/mw-test inside
        self.podman_run = tmp / "podman-run"  # /run/podman inside: the host engine's socket
        for d in (self.exchange, self.podman_run):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.started = False

    # -- lifecycle -----------------------------------------------------------------
    def start(self, timeout: float = 90) -> SystemdHost:
        ref = self.image.ensure()
        self._remove_stale()
        mounts = [f"{ROOT}:{SRC}:ro", f"{self.dist.dist}:{DIST}:ro", f"{self.dist.wheels}:{WHEELS}",
                  f"{self.exchange}:{EXCHANGE}", f"{self.podman_run}:{PODMAN_RUN}"]
        self.podman.cli("run", "-d", "--name", self.name, *RUN_FLAGS,
                        *(a for m in mounts for a in ("-v", m)), ref, "/sbin/init", timeout=120)
        self.started = True
        wait_until(self._booted, timeout, f"systemd to boot in {self.name}", interval=0.3)
        return self

    def _remove_stale(self) -> None:
        """Containers of test sessions that died without stop() (their pid is gone)."""
        names = self.podman.cli("ps", "-a", "--filter", "name=^mw-systemd-", "--format",
                                "{{.Names}}", check=False).split()
        for name in names:
            pid = name.split("-")[2] if name.count("-") >= 3 else ""
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                self.podman.cli("rm", "--force", "--time", "0", name, check=False, timeout=120)

    def _booted(self) -> bool:
        state = self.sh("systemctl is-system-running", check=False).stdout.strip()
        if state in ("degraded",):
            failed = self.sh("systemctl --failed --no-legend --plain", check=False).stdout
            raise RuntimeError(f"systemd booted degraded: {failed}")
        return state == "running"

    def stop(self) -> None:
        if self.started:
            self.podman.cli("rm", "--force", "--time", "0", self.name, check=False, timeout=120)
            self.started = False

    # -- commands --------------------------------------------------------------------
    def sh(self, script: str, check: bool = True, timeout: float = 120,
           user: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside (as root, or `user` through runuser)."""
        argv = ["sh", "-c", script]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        proc = subprocess.run([self.podman.binary, "exec", self.name, *argv],
                              env={**os.environ, **self.podman.env}, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"in {self.name}: {script!r} exited {proc.returncode}:\n"
                               f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
        return proc

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return self.sh(shlex.join(["systemctl", *args]), check=check, timeout=timeout).stdout

    def show(self, unit: str, *props: str, user: bool = False) -> dict[str, str]:
        """Properties of a unit of the system manager, or of model-watcher's user manager."""
        argv = ["systemctl", "show", unit, "--property=" + ",".join(props)]
        if user:
            argv = ["sh", "-c", 'XDG_RUNTIME_DIR=/run/user/$(id -u) exec "$@"', "-",
                    argv[0], "--user", *argv[1:]]
        out = self.sh(shlex.join(argv), user="model-watcher" if user else None).stdout
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def cursor(self) -> str:
        out = self.sh("journalctl --show-cursor -n 0 --quiet").stdout
        return out.strip().rpartition("cursor: ")[2]

    def journal(self, unit: str, after: str | None = None) -> list[dict[str, Any]]:
        """Entries of `unit` (journalctl -o json), after the cursor `after` when given."""
        args = ["journalctl", "-u", unit, "-o", "json", "--no-pager"]
        if after:
            args += ["--after-cursor", after]
        out = self.sh(shlex.join(args)).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def messages(self, unit: str, after: str | None = None) -> str:
        return "\n".join(str(e.get("MESSAGE", "")) for e in self.journal(unit, after))

    def write(self, path: str, text: str, mode: str = "0644", owner: str = "root:root") -> None:
        """Put `text` at `path` inside (through the exchange directory, then `install`)."""
        src = self.exchange / f".write-{secrets.token_hex(4)}"
        src.write_text(text)
        try:
            self.sh(f"install -D -m {mode} -o {owner.split(':')[0]} -g {owner.split(':')[1]} "
                    f"{shlex.quote(EXCHANGE + '/' + src.name)} {shlex.quote(path)}")
        finally:
            src.unlink(missing_ok=True)

    def cli(self, *args: str, check: bool = True) -> str:
        """`model-watcher ARGS` as the service user, with the installed settings."""
        return self.sh(shlex.join([MW, "--config", CONFIG, *args]), user="model-watcher",
                       check=check).stdout

    # -- the documented install ------------------------------------------------------
    def install(self, runtime: str = "none", engine_group: str = "docker") -> None:
        """systemd/install.sh with the host-built wheel; fills the wheelhouse on first use."""
        marker = self.dist.wheels / ".complete"
        if not marker.exists():
            self.dist.download_wheels()
            marker.write_text("")
            self.image.timings["wheel download"] = self.dist.download_seconds
        self.sh(shlex.join([f"{SRC}/systemd/install.sh", "--wheel", f"{DIST}/{self.dist.wheel}",
                            "--requirements", f"{DIST}/requirements.txt", "--find-links", WHEELS,
                            "--runtime", runtime, "--engine-group", engine_group]), timeout=600)
