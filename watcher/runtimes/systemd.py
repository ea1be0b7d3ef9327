"""The `systemd` runtime: a model server that runs as a unit, restarted in place.

    prepare  the unit must be known to systemd (LoadState=loaded); touches nothing running
    start    write the spec's runtime section to the unit's EnvironmentFile (atomically),
             `systemctl restart UNIT`, wait for ActiveState=active
    stop     `systemctl stop UNIT` (the document was deleted and the settings say unload)

There is only one instance: a failed health gate is repaired by the executor starting the
previous spec again (the restart is in place: no other instance runs beside it).

The unit reads the file with `EnvironmentFile=` (written 0600: it may hold secrets; systemd
reads it as root); it holds the spec's admitted `runtime.env` (childenv.py) plus
MODEL_WATCHER_MODEL / _VERSION / _REVISION / _IMAGE / _ARGS (args JSON-encoded), so
`instances()` can tell which revision runs after a daemon restart. `systemctl` is an argv
prefix, e.g. ["systemctl", "--user"], never a shell.

Under the hardened unit the daemon's user restarts the model server's unit through systemd's
D-Bus API (what `systemctl` does); a polkit rule allows it exactly start/stop/restart of
`model-server@*.service` (systemd/polkit/model-watcher-systemd.rules). The EnvironmentFile
lives in the daemon's StateDirectory, which PID 1 reads as root: no ReadWritePaths= needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.childenv import EnvPolicy, child_env
from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.fsutil import write_atomically
from watcher.placeholders import fill
from watcher.plugins import PluginContext, parse_options
from watcher.proc import run_argv
from watcher.runtimes.base import Instance

log = logging.getLogger("watcher.runtimes.systemd")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SystemdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: str = Field("{model}.service", description="unit name; {model} is replaced")
    systemctl: list[str] = Field(default_factory=lambda: ["systemctl", "--no-ask-password"],
                                 min_length=1)
    env_file: Path | None = Field(None, description="the unit's EnvironmentFile; {model} replaced")
    base_url: str | None = Field(None, description="the server's URL, for the health gate")
    timeout: float = Field(90.0, gt=0, description="for each systemctl call and for activation")


class SystemdRuntime:
    def __init__(self, opts: SystemdOptions, ctx: PluginContext) -> None:
        self.opts = opts
        self.ctx = ctx

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> SystemdRuntime:
        return cls(parse_options(SystemdOptions, options, "runtime"), ctx)

    async def aclose(self) -> None:
        return None

    def unit(self, model: str) -> str:
        return fill(self.opts.unit, model)

    def env_file(self, model: str) -> Path | None:
        f = self.opts.env_file
        return Path(fill(str(f), model)) if f is not None else None

    async def prepare(self, spec: ModelSpec) -> None:
        props = await self._show(self.unit(spec.name))
        if props.get("LoadState") != "loaded":
            raise RuntimeStartError(f"{spec.name}: unit {self.unit(spec.name)} is "
                                    f"{props.get('LoadState') or 'unknown'} (not loaded)")

    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        unit = self.unit(spec.name)
        path = self.env_file(spec.name)
        if path is not None:
            write_atomically(path, render_env(spec, revision, self.ctx.env_policy).encode(),
                             mode=0o600)  # may hold secrets
        elif spec.runtime.env or spec.runtime.args:
            log.warning("%s: runtime.env/args given but no env_file is configured; the unit "
                        "restarts with its own settings", spec.name, extra={"model": spec.name})
        await self._systemctl("restart", unit)
        deadline = time.monotonic() + self.opts.timeout
        while True:
            props = await self._show(unit)
            state = props.get("ActiveState")
            if state == "active":
                break
            if state == "failed" or time.monotonic() > deadline:
                raise RuntimeStartError(f"{spec.name}: {unit} is {state} after restart "
                                        f"({props.get('Result') or 'no result'})")
            await asyncio.sleep(0.1)
        log.info("%s: restarted %s (pid %s)", spec.name, unit, props.get("MainPID"),
                 extra={"model": spec.name, "revision": revision})
        return self._instance(spec.name, revision, props)

    async def stop(self, instance: Instance) -> None:
        """Stop the unit (the document was deleted and the settings say unload)."""
        await self._systemctl("stop", self.unit(instance.model))

    async def instances(self, model: str) -> list[Instance]:
        props = await self._show(self.unit(model))
        if props.get("ActiveState") not in ("active", "reloading", "activating"):
            return []
        revision = ""
        path = self.env_file(model)
        if path is not None and path.exists():
            revision = parse_env(path.read_text()).get("MODEL_WATCHER_REVISION", "")
        return [self._instance(model, revision, props)]

    def _instance(self, model: str, revision: str, props: Mapping[str, str]) -> Instance:
        return Instance(id=self.unit(model), model=model, revision=revision,
                        health_url=self.opts.base_url, name=self.unit(model),
                        artifact=f"pid {props.get('MainPID') or '?'}")

    async def _show(self, unit: str) -> dict[str, str]:
        out = await self._systemctl("show", unit,
                                    "--property=LoadState,ActiveState,SubState,MainPID,Result")
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    async def _systemctl(self, *args: str) -> str:
        return await run_argv([*self.opts.systemctl, *args], seconds=self.opts.timeout,
                              error=RuntimeStartError)


def render_env(spec: ModelSpec, revision: str, policy: EnvPolicy | None = None,
               extra: Mapping[str, str] | None = None) -> str:
    """EnvironmentFile text: one KEY="value" a line, values quoted for systemd. The spec's
    `runtime.env` is admitted by `policy` (watcher/core/childenv.py) first."""
    own = {"MODEL_WATCHER_MODEL": spec.name, "MODEL_WATCHER_VERSION": spec.version,
           "MODEL_WATCHER_REVISION": revision, "MODEL_WATCHER_IMAGE": spec.runtime.image or "",
           "MODEL_WATCHER_ARGS": json.dumps(spec.runtime.args), **(extra or {})}
    try:
        values = child_env(spec.runtime.env, own, policy or EnvPolicy(), base=False)
    except ValueError as exc:
        raise RuntimeStartError(f"{spec.name}: {exc}") from None
    lines = ["# written by model-watcher before each restart; do not edit"]
    for key, value in values.items():
        if not ENV_NAME.match(key):
            raise RuntimeStartError(f"{spec.name}: runtime.env key {key!r} is not a valid "
                                    "environment variable name")
        if "\n" in value:
            raise RuntimeStartError(f"{spec.name}: runtime.env {key} contains a newline")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """Read back what `render_env` wrote."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip()] = value
    return out
