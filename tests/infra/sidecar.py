"""The images of the sidecar tests, built with podman from the project's own files.

These machines cannot pull the public Python base that users build the `Containerfile` from,
so the tests build the same file from a base made from Debian's packages (bookworm's
python3 3.11 and its venv module, as in the official image), passed as `--build-arg BASE`:

    base        RootfsImage: mmdebstrap minbase + python3, python3-venv, ca-certificates
                (no recommends, merged /usr without the usrmerge package), cached on that list
    watcher     ./Containerfile FROM base; the locked requirements' wheels and the build
                tools' (uv, hatchling) are downloaded on the host, where the network's trust
                settings are, and mounted into the build (`podman build -v`, PIP_OPTIONS
                "--no-index --find-links ..."): pip inside a container here rejects the
                proxy's certificate
    model server  examples/compose/model-server.Containerfile FROM base
    etcd        the host's etcd (Debian etcd-server, linked against libc only) on the base:
                what the compose example takes from quay.io/coreos/etcd elsewhere

Everything lives in one podman storage under the test cache (CACHE/sidecar/podman), so the
base import and the build's layers are reused by the next run; containers and volumes the
tests create carry this process's pid in their names and are removed afterwards (and by the
next session, if this one died).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.infra.common import CACHE, ROOT, require_binary
from tests.infra.podman import PodmanEnv
from tests.infra.rootfs_image import RootfsImage
from tests.infra.systemd_host import Distribution

CONTAINERFILE = ROOT / "Containerfile"
MODEL_SERVER_FILE = ROOT / "examples" / "compose" / "model-server.Containerfile"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
OPTIONS = ("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
           '--aptopt=Apt::Install-Recommends "false"')
HOOKS = ('rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* '
         '"$1"/usr/share/doc/* "$1"/usr/share/man/*',)
CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "ENV LANG=C.UTF-8", 'CMD ["python3"]')
ETCD_HINT = "Debian package etcd-server (scripts/deps/20-etcd.sh)"


def uv_version() -> str:
    """The uv the Containerfile pins (its ARG), so the host downloads that wheel."""
    match = re.search(r"^ARG UV_VERSION=(\S+)$", CONTAINERFILE.read_text(), re.M)
    if match is None:
        raise RuntimeError("Containerfile: no `ARG UV_VERSION=...` line")
    return match.group(1)


class SidecarImages:
    """Builds (or finds) each image once per session; `timings` says what it cost."""

    def __init__(self, tmp: Path, cache: Path = CACHE / "sidecar") -> None:
        self.tmp = tmp
        self.cache = cache
        self.podman = PodmanEnv(cache / "podman")
        self.base_image = RootfsImage(cache, "mw-python-base", PACKAGES, hooks=HOOKS,
                                      variant="minbase", options=OPTIONS, changes=CHANGES,
                                      podman=self.podman)
        self.timings: dict[str, float] = {}
        self.tag = f"{os.getpid()}"

    # -- images ------------------------------------------------------------------------
    @functools.cache  # noqa: B019 - one object per session
    def base(self) -> str:
        ref = self.base_image.ensure()
        self.timings.update(self.base_image.timings)
        return ref

    @functools.cache  # noqa: B019 - one object per session
    def watcher(self) -> str:
        """./Containerfile, exactly as users build it, FROM the Debian-made base."""
        base = self.base()
        wheels, tools = wheelhouses(self.tmp / "dist", self.cache, self.timings)
        ref = f"localhost/model-watcher:test-{self.tag}"
        pip = "--no-index --find-links /wheels --find-links /tools"
        self._build("watcher build", CONTAINERFILE, ref, ROOT, "-v", f"{wheels}:/wheels:ro",
                    "-v", f"{tools}:/tools:ro", "--build-arg", f"BASE={base}",
                    "--build-arg", f"PIP_OPTIONS={pip}", "--build-arg", f"REVISION={_git_head()}",
                    "--build-arg", "CREATED=" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return ref

    @functools.cache  # noqa: B019 - one object per session
    def model_server(self) -> str:
        ref = f"localhost/mw-example-model-server:test-{self.tag}"
        self._build("model server build", MODEL_SERVER_FILE, ref, ROOT,
                    "--build-arg", f"BASE={self.base()}")
        return ref

    @functools.cache  # noqa: B019 - one object per session
    def etcd(self) -> str:
        binary = Path(require_binary("etcd", ETCD_HINT)).resolve()
        digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
        ref = f"localhost/mw-etcd:{digest}"
        if self._exists(ref):
            return ref
        ctx = self.tmp / "etcd-context"
        ctx.mkdir(parents=True, exist_ok=True)
        shutil.copy2(binary, ctx / "etcd")
        (ctx / "Containerfile").write_text(
            f"FROM {self.base()}\nCOPY etcd /usr/local/bin/etcd\n"
            'EXPOSE 2379\nCMD ["/usr/local/bin/etcd"]\n')
        self._build("etcd image", ctx / "Containerfile", ref, ctx)
        return ref

    def _build(self, what: str, file: Path, ref: str, context: Path, *args: str) -> None:
        t0 = time.monotonic()
        self.podman.cli("build", "--quiet", "--format", "docker", "--file", str(file),
                        "--tag", ref, *args, str(context), timeout=900)
        self.timings[what] = time.monotonic() - t0

    def _exists(self, ref: str) -> bool:
        proc = subprocess.run([self.podman.binary, "image", "exists", ref],
                              env={**os.environ, **self.podman.env}, capture_output=True, timeout=60)
        return proc.returncode == 0

    # -- housekeeping ------------------------------------------------------------------
    def remove_stale(self) -> None:
        """Containers, volumes and test images of sessions that died (their pid is gone), and
        build layers older than a day."""
        for kind, fmt in (("ps", "{{.Names}}"), ("volume", "{{.Name}}")):
            args = ("ps", "-a", "--format", fmt) if kind == "ps" else ("volume", "ls", "--format", fmt)
            for name in self.podman.cli(*args, check=False).split():
                pid = _pid_of(name)
                if pid and not Path(f"/proc/{pid}").exists():
                    rm = ("rm", "--force", "--time", "0") if kind == "ps" else ("volume", "rm", "--force")
                    self.podman.cli(*rm, name, check=False, timeout=120)
        images = self.podman.cli("images", "--format", "{{.Repository}}:{{.Tag}}", check=False)
        for ref in images.split():
            tag = ref.rpartition(":")[2]
            if tag.startswith("test-") and tag[5:].isdigit() and not Path(f"/proc/{tag[5:]}").exists():
                self.podman.cli("rmi", "--force", ref, check=False, timeout=120)
        # build layers of older sources: reused within a day, then dropped (bounded cache)
        self.podman.cli("image", "prune", "--force", "--filter", "until=24h", check=False, timeout=300)

    def remove_test_images(self) -> None:
        """This session's images (the base, the etcd image and the build's layers stay)."""
        for ref in (f"localhost/model-watcher:test-{self.tag}",
                    f"localhost/mw-example-model-server:test-{self.tag}"):
            self.podman.cli("rmi", "--force", ref, check=False, timeout=120)


def wheelhouses(tmp: Path, cache: Path = CACHE / "sidecar",
                timings: dict[str, float] | None = None) -> tuple[Path, Path]:
    """The locked requirements' wheels (cached with the systemd tests', on their hash) and
    the build tools' (uv at the Containerfile's version, hatchling), downloaded on the host:
    for offline installs (`pip --no-index --find-links`) in containers and clean venvs."""
    timings = {} if timings is None else timings
    dist = Distribution(tmp)
    marker = dist.wheels / ".complete"
    if not marker.exists():
        t0 = time.monotonic()
        dist.download_wheels()
        marker.write_text("")
        timings["wheel download"] = time.monotonic() - t0
    version = uv_version()
    tools = cache / f"tools-uv{version}"
    if not (tools / ".complete").exists():
        for old in cache.glob("tools-*"):
            shutil.rmtree(old, ignore_errors=True)
        tools.mkdir(parents=True)
        t0 = time.monotonic()
        subprocess.run([dist.uv, "tool", "run", "--python", "3.11", "--from", "pip", "pip",
                        "download", "--quiet", "--only-binary=:all:", "--dest", str(tools),
                        f"uv=={version}", "hatchling"], check=True, capture_output=True,
                       timeout=600)
        (tools / ".complete").write_text("")
        timings["tools download"] = time.monotonic() - t0
    return dist.wheels, tools


def _pid_of(name: str) -> str:
    """`mwt-PID-...` names are this module's tests' containers and volumes."""
    parts = name.split("-")
    return parts[1] if len(parts) > 2 and parts[0] == "mwt" and parts[1].isdigit() else ""


def _git_head() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    return proc.stdout.strip() or "unknown"
