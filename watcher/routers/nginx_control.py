"""How the daemon reloads nginx and sees its worker processes, with or without systemd.

Two shapes, chosen by `unit`:

- **nginx of the daemon's own user** (a sidecar, the tests): `nginx -t -q`, then
  `nginx -s reload` (with `-c`/`-p`); its workers are the master's children in /proc
  (master from `pid_file`).
- **nginx as a system service** (`unit = "nginx.service"`, a root-owned master) while the
  daemon runs as its own user with `ProtectProc=invisible`: a signal to root's master is
  refused (no CAP_KILL), `nginx -t` cannot open root's logs, and /proc hides root's
  processes. So: `systemctl --no-ask-password reload UNIT`, allowed to the daemon's user for
  that one unit and verb by a polkit rule (systemd/polkit/); the unit's ExecReload tests the
  config first (systemd/nginx.service.d/model-watcher.conf: Debian's ExecReload does not),
  so a refused config fails the reload and the previous file is put back; and the workers
  are read from the unit's cgroup (`cgroup.procs` is readable by anyone, and ProtectProc
  does not apply to cgroupfs), its master being the unit's MainPID.

A drain waits for a new worker generation and the exit of the old one, i.e. for the
connections accepted under the previous config to end; without a way to see the workers
it waits `settle` seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.errors import RuntimeStartError
from watcher.proc import run_argv

CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/systemd"))


class TrafficError(RuntimeStartError):
    """nginx refused the rendered config or could not be reloaded; the old file is back."""


class NginxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream_file: Path = Field(description="file the daemon rewrites; included in http {}")
    upstream: str = Field("{model}", pattern=r"^[A-Za-z0-9_.{}-]+$",
                          description="upstream block name; {model} is replaced")
    unit: str | None = Field(None, pattern=r"^[A-Za-z0-9:_.@-]+\.service$",
                             description="nginx's systemd unit: reload with systemctl, workers "
                             "from its cgroup (a root-owned master; see nginx_control)")
    systemctl: list[str] = Field(default_factory=lambda: ["systemctl", "--no-ask-password"],
                                 min_length=1)
    binary: str = "nginx"
    conf: Path | None = Field(None, description="nginx -c FILE")
    prefix: Path | None = Field(None, description="nginx -p DIR")
    pid_file: Path | None = Field(None, description="master pid file: lets reloads wait for "
                                  "old workers to finish (drain); without it, `settle` seconds")
    access_log: Path | None = Field(None, description="access log in format mw_<upstream>")
    settle: float = Field(1.0, ge=0)
    drain_timeout: float = Field(30.0, gt=0)
    command_timeout: float = Field(15.0, gt=0)


class NginxControl:
    """Reload and worker discovery for one nginx (see the module docstring)."""

    def __init__(self, opts: NginxOptions) -> None:
        self.opts = opts
        self._cgroup: Path | None = None

    async def reload(self) -> None:
        """Test the config and reload; TrafficError when nginx refuses either."""
        if self.opts.unit is not None:
            await self._run([*self.opts.systemctl, "reload", self.opts.unit])
            return
        await self._nginx("-t", "-q")
        await self._nginx("-s", "reload")

    async def workers(self) -> tuple[int, set[int]] | None:
        """(master pid, its worker pids), or None when they cannot be seen."""
        if self.opts.unit is not None:
            return await self._unit_workers()
        return self._pid_file_workers()

    def _pid_file_workers(self) -> tuple[int, set[int]] | None:
        master = self._pid_file_master()
        if master is None or not Path(f"/proc/{master}").exists():  # ProtectProc hides it
            return None
        return master, children(master)

    async def _unit_workers(self) -> tuple[int, set[int]] | None:
        props = await self._show("MainPID", "ControlGroup")
        master = int(props.get("MainPID") or 0)
        if not master:
            return None
        if self._cgroup is None:
            self._cgroup = cgroup_dir(props.get("ControlGroup", ""))
        if self._cgroup is None:
            return None
        procs = cgroup_procs(self._cgroup)
        if procs is None:
            self._cgroup = None  # the unit restarted into a new cgroup; found again next time
            return None
        return master, procs - {master}

    async def _show(self, *props: str) -> dict[str, str]:
        out = await self._run([*self.opts.systemctl, "show", str(self.opts.unit),
                               "--property=" + ",".join(props)])
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def _pid_file_master(self) -> int | None:
        if self.opts.pid_file is None:
            return None
        try:
            return int(self.opts.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    async def _nginx(self, *args: str) -> None:
        argv = [self.opts.binary, *args]
        if self.opts.conf is not None:
            argv += ["-c", str(self.opts.conf)]
        if self.opts.prefix is not None:
            argv += ["-p", str(self.opts.prefix)]
        await self._run(argv)

    async def _run(self, argv: list[str]) -> str:
        return await run_argv(argv, seconds=self.opts.command_timeout, error=TrafficError)


def cgroup_dir(control_group: str) -> Path | None:
    """The directory of a unit's cgroup (v2, hybrid or v1's name=systemd hierarchy)."""
    if not control_group.startswith("/"):
        return None
    for root in CGROUP_ROOTS:
        path = root / control_group.lstrip("/")
        if (path / "cgroup.procs").exists():
            return path
    return None


def cgroup_procs(path: Path) -> set[int] | None:
    """The pids in a cgroup (cgroup.procs), None when it is gone."""
    try:
        text = (path / "cgroup.procs").read_text()
    except OSError:
        return None
    return {int(p) for p in text.split() if p.isdigit()}


def children(pid: int) -> set[int]:
    """Pids whose parent is `pid` (Linux /proc), excluding zombies."""
    out: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == pid:
            out.add(int(entry.name))
    return out
