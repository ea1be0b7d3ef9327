"""Docker Engine (Debian `docker.io` 20.10) as plain processes, for the tests.

    with running_dockerd(tmp_path / "dockerd", insecure=["127.0.0.1:5000"]) as d:
        d.socket      # the Engine API's unix socket
        d.api         # EngineAPI: containers(label), inspect, create, remove

`Dockerd.start()` runs a containerd and a dockerd of their own; nothing is shared with a
system Docker (if any) or with another test session running beside this one:

- state: the data root (images, containers; overlay2, or whatever dockerd picks) under
  `root`; the exec root, pid files and both sockets in a short directory under /tmp (a unix
  socket path is limited to 107 bytes); `--config-file` is an empty file of our own so
  `/etc/docker/daemon.json` is never read, and the identity key is kept under `root`;
- containerd: started here with its own config (root, state, gRPC socket, and the `opt`
  plugin's directory) and handed to dockerd with `--containerd`, rather than letting dockerd
  adopt a system containerd at /run/containerd/containerd.sock when one runs;
- network: a bridge of its own (`mwd` + 8 hex, a free /24 in 172.31.0.0/16, a fixed MAC)
  created before dockerd and deleted after; containers attach to it (`--bridge`) and published ports go
  through docker-proxy (the userland proxy). `--iptables=false --ip6tables=false`: the
  host's firewall (and podman's netavark rules) are never touched, and docker0 is never
  created, so two dockerds never share a bridge or its addresses;
- cgroups: the cgroupfs driver (no systemd as PID 1 on these machines);
- registries: `insecure` addresses are passed as `--insecure-registry` (plain HTTP).

`stop()` removes every container, stops dockerd then containerd, kills whatever is left (a
container's processes by its cgroup, a shim by our containerd's socket in its command line:
only after dockerd died), unmounts what is still mounted under our directories and deletes
the bridge. dockerd needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.infra.common import Proc, require_binary, wait_until
from tests.infra.engine_api import EngineAPI

HINT = "Debian package docker.io (scripts/deps/45-docker.sh)"
POOL = ipaddress.ip_network("172.31.0.0/16")

CONTAINERD_TOML = """\
version = 2
root = "{root}/containerd"
state = "{run}/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{run}/containerd.sock"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/containerd-opt"
"""


class Dockerd:
    """A dockerd (and its containerd) serving the Engine API on `socket` until `stop()`."""

    def __init__(self, root: Path, insecure: Sequence[str] = ()) -> None:
        self.dockerd = require_binary("dockerd", HINT)
        self.containerd = require_binary("containerd", HINT)
        self.proxy = require_binary("docker-proxy", HINT)
        require_binary("containerd-shim-runc-v2", HINT)
        require_binary("runc", HINT)
        self.ip = require_binary("ip", "Debian package iproute2")
        if os.geteuid() != 0:
            raise RuntimeError("dockerd needs root (as on the hosts it manages)")
        self.root = root
        self.insecure = list(insecure)
        root.mkdir(parents=True, exist_ok=True)
        self.run = Path(tempfile.mkdtemp(prefix="mwd-", dir="/tmp"))
        self.socket = self.run / "docker.sock"
        self.bridge = f"mwd{random.randbytes(4).hex()}"
        self.api = EngineAPI("docker", self.socket)
        self._containerd: Proc | None = None
        self._dockerd: Proc | None = None

    def start(self, timeout: float = 60) -> Dockerd:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self._make_bridge()
        (self.root / "containerd.toml").write_text(CONTAINERD_TOML.format(root=self.root,
                                                                          run=self.run))
        self._containerd = Proc([self.containerd, "--config", str(self.root / "containerd.toml")],
                                self.root / "containerd.log")
        self._wait(self._containerd, "containerd", lambda: (self.run / "containerd.sock").exists(),
                   timeout)
        # The identity key goes here instead of /etc/docker/key.json (a file-only setting).
        (self.root / "daemon.json").write_text(
            json.dumps({"deprecated-key-path": str(self.root / "key.json")}) + "\n")
        self._start_dockerd(timeout)

    def _start_dockerd(self, timeout: float) -> None:
        argv = [
            self.dockerd, "--config-file", str(self.root / "daemon.json"),
            "--data-root", str(self.root / "data"), "--exec-root", str(self.run / "exec"),
            "--pidfile", str(self.run / "docker.pid"), "--host", f"unix://{self.socket}",
            "--containerd", str(self.run / "containerd.sock"),
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--bridge", self.bridge, "--userland-proxy-path", self.proxy,
            *(f"--insecure-registry={r}" for r in self.insecure),
        ]
        self._dockerd = Proc(argv, self.root / "dockerd.log")
        self._wait(self._dockerd, "dockerd", lambda: self.socket.exists() and self.api.ping(),
                   timeout)

    @staticmethod
    def _wait(proc: Proc, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Until `ready()`; fails at once (with its output) when `proc` exits instead."""
        wait_until(lambda: not proc.alive() or ready(), timeout, f"{what} to be ready")
        if not proc.alive():
            raise RuntimeError(f"{what} exited {proc.popen.returncode}:\n{proc.output()[-2000:]}")

    def restart(self, timeout: float = 60) -> None:
        """Restart dockerd alone (as an upgrade of the package or a host reboot would); its
        shutdown stops the running containers, and only their restart policy brings them
        back. containerd, the bridge and the data root stay."""
        assert self._dockerd is not None, "not started"
        self._dockerd.stop(timeout=60)
        self._start_dockerd(timeout)

    def containers(self, label: str) -> list[str]:
        """Names of all containers (any state) carrying `label` (key or key=value)."""
        return self.api.containers(label)

    def log(self) -> str:
        return self._dockerd.output() if self._dockerd is not None else ""

    # -- network ---------------------------------------------------------------
    def _make_bridge(self) -> None:
        subnet = _free_subnet(self._used_networks())
        gateway = next(subnet.hosts())
        # An explicit MAC, as dockerd gives the docker0 it creates: otherwise the bridge takes
        # the lowest MAC of its ports, which changes as containers (veths) come and go, and the
        # running containers' ARP entries for the gateway go stale (requests stall for seconds).
        mac = "02:" + ":".join(f"{b:02x}" for b in random.randbytes(5))
        self._ipcmd("link", "add", self.bridge, "address", mac, "type", "bridge")
        self._ipcmd("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", self.bridge)
        self._ipcmd("link", "set", self.bridge, "up")

    def _used_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        out = subprocess.run([self.ip, "-4", "-json", "route", "show", "table", "all"],
                             capture_output=True, text=True, check=True).stdout
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for route in json.loads(out or "[]"):
            with contextlib.suppress(ValueError):
                if route.get("dst", "default") != "default":
                    nets.append(ipaddress.ip_network(route["dst"], strict=False))
        return nets

    def _ipcmd(self, *args: str, check: bool = True) -> None:
        proc = subprocess.run([self.ip, *args], capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    # -- stop ------------------------------------------------------------------
    def stop(self) -> None:
        """Remove every container, stop both daemons, clean up; safe to call twice."""
        if self._dockerd is not None:
            if self._dockerd.alive():
                with contextlib.suppress(Exception):
                    self.api.remove_all()
            self._dockerd.stop(timeout=30)
            self._dockerd = None
        self._kill_containers()  # only left when dockerd died without stopping them
        if self._containerd is not None:
            self._containerd.stop(timeout=15)
            self._containerd = None
        self._kill_shims()
        self._unmount()
        self._ipcmd("link", "del", self.bridge, check=False)
        shutil.rmtree(self.run, ignore_errors=True)
        shutil.rmtree(self.root / "data", ignore_errors=True)

    def _kill_containers(self) -> None:
        """SIGKILL what still runs in our containers' cgroups (cgroupfs driver, v1 or v2)."""
        containers = self.root / "data" / "containers"
        ids = [p.name for p in containers.iterdir()] if containers.is_dir() else []
        for cid in ids:
            for base in ("/sys/fs/cgroup/pids/docker", "/sys/fs/cgroup/docker"):
                with contextlib.suppress(OSError, ValueError):
                    for pid in (Path(base) / cid / "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)

    def _kill_shims(self) -> None:
        """Shims daemonize out of containerd's process group; ours name our socket."""
        address = str(self.run / "containerd.sock").encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"containerd-shim" in argv[0] and address in argv:
                    os.kill(int(entry.name), signal.SIGKILL)

    def _unmount(self) -> None:
        ours = (str(self.root), str(self.run))
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted(points, key=len, reverse=True):
            if point.startswith(ours):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _free_subnet(used: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                 ) -> ipaddress.IPv4Network:
    """A random /24 of POOL that overlaps no route of the host (other dockerds' bridges)."""
    candidates = list(POOL.subnets(new_prefix=24))
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used if u.version == 4):
            return net
    raise RuntimeError(f"no free /24 left in {POOL} for a dockerd bridge")


@contextlib.contextmanager
def running_dockerd(root: Path, insecure: Sequence[str] = ()) -> Iterator[Dockerd]:
    """A started Dockerd, stopped (containers removed, bridge deleted) on exit."""
    d = Dockerd(root, insecure)
    d.start()
    try:
        yield d
    finally:
        d.stop()
