"""`command` runtime: restart the model server by running an argv list (never a shell).

For servers managed by a script or a process supervisor. The command restarts in place, so
a failed restart is repaired by running it again with the previous spec. The spec is written
to a JSON file first, and the command gets it as `{spec_file}` and in the environment
(MODEL_WATCHER_SPEC_FILE, MODEL_WATCHER_MODEL, MODEL_WATCHER_REVISION, MODEL_WATCHER_VERSION,
MODEL_WATCHER_IMAGE). The environment is `childenv.child_env`: `policy.env.base` + the spec's
admitted `runtime.env` + those, never the daemon's own environment. Placeholders in the argv:
{model} {revision}
{version} {image} {spec_file} {python} (the daemon's own interpreter).

With `unit` set (the daemon as a systemd service), `start` is the server's foreground argv
and each restart replaces a transient service of that name in the service user's own
systemd manager (`systemctl --user stop`, then `systemd-run --user`). A process the daemon
forked itself would live in the daemon's cgroup (killed by every stop, watchdog kill or
restart of the daemon, and never started again, the revision being handled) and inherit
its sandbox (PrivateDevices hides GPUs, MemoryDenyWriteExecute breaks JIT servers). The
user manager forks the server fresh, in a cgroup of its own; the environment goes through
an EnvironmentFile (0600, never argv). The unit needs the user's manager running
(`loginctl enable-linger model-watcher`) and reachable (systemd/runtime-command.conf).
"""

from __future__ import annotations

import json
import logging
import os
import sys
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
from watcher.runtimes.systemd import render_env

log = logging.getLogger("watcher.runtimes.command")


class CommandOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: list[str] = Field(min_length=1, description="argv that (re)starts the server")
    stop: list[str] | None = Field(None, description="argv that stops it (document deleted)")
    timeout: float = Field(120.0, gt=0)
    health_url: str | None = Field(None, description="base URL of the restarted server")
    unit: str | None = Field(None, pattern=r"^[A-Za-z0-9:_.{}-]+$", description="transient "
                             "user service running `start` ({model} replaced), see module doc")
    systemd_run: list[str] = Field(default_factory=lambda: ["systemd-run", "--user",
                                                            "--no-ask-password"], min_length=1)
    systemctl: list[str] = Field(default_factory=lambda: ["systemctl", "--user",
                                                          "--no-ask-password"], min_length=1)


class CommandRuntime:
    def __init__(self, options: CommandOptions, state_dir: Path, env_policy: EnvPolicy | None = None) -> None:
        self.options = options
        self.spec_dir = state_dir / "specs"
        self.env_policy = env_policy or EnvPolicy()

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> CommandRuntime:
        return cls(parse_options(CommandOptions, options, "runtime"), ctx.state_dir, ctx.env_policy)

    def _spec_file(self, spec: ModelSpec) -> Path:
        path = self.spec_dir / f"{spec.name}.json"
        write_atomically(path, json.dumps(spec.canonical(), indent=2).encode(), mode=0o600)
        return path

    async def _run(self, argv: list[str], spec: ModelSpec, revision: str) -> None:
        spec_file = self._spec_file(spec)
        values = {"model": spec.name, "name": spec.name, "revision": revision, "version": spec.version,
                  "image": spec.runtime.image or "", "spec_file": str(spec_file),
                  "python": sys.executable}
        args = [a.format_map(values) for a in argv]
        own = {"MODEL_WATCHER_SPEC_FILE": str(spec_file), "MODEL_WATCHER_MODEL": spec.name,
               "MODEL_WATCHER_REVISION": revision, "MODEL_WATCHER_VERSION": spec.version,
               "MODEL_WATCHER_IMAGE": values["image"]}
        if self.options.unit is not None:
            await self._run_unit(args, spec, revision, own)
            return
        try:
            env = child_env(spec.runtime.env, own, self.env_policy)
        except ValueError as exc:
            raise RuntimeStartError(f"{spec.name}: {exc}") from None
        log.info("running %s", args[0], extra={"model": spec.name, "revision": revision})
        await run_argv(args, seconds=self.options.timeout, error=RuntimeStartError, env=env)

    def unit(self, model: str) -> str:
        return fill(str(self.options.unit), model).removesuffix(".service") + ".service"

    async def _run_unit(self, args: list[str], spec: ModelSpec, revision: str,
                        extra: dict[str, str]) -> None:
        """Replace the transient service: stop the old one, start `args` as a new one."""
        unit = self.unit(spec.name)
        env_file = self.spec_dir / f"{spec.name}.env"
        write_atomically(env_file, render_env(spec, revision, self.env_policy, extra).encode(),
                         mode=0o600)
        await self._stop_unit(unit)
        log.info("starting %s as %s", args[0], unit, extra={"model": spec.name, "revision": revision})
        try:
            await self._manager([*self.options.systemd_run, f"--unit={unit}", "--collect",
                                 "--same-dir", "--property=Type=exec",
                                 f"--property=EnvironmentFile={env_file}", "--", *args])
        except RuntimeStartError as exc:
            raise RuntimeStartError(f"{exc.reason} (is the service user's systemd manager "
                                    "running? loginctl enable-linger USER)") from exc

    async def _stop_unit(self, unit: str) -> None:
        try:
            await self._manager([*self.options.systemctl, "stop", unit])
        except RuntimeStartError as exc:
            if "not loaded" not in exc.reason:
                raise
        # a unit that failed stays "failed" until reset, and would block the name
        await self._manager([*self.options.systemctl, "reset-failed", unit], check=False)

    async def _manager(self, argv: list[str], check: bool = True) -> None:
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
        try:
            await run_argv(argv, seconds=self.options.timeout, error=RuntimeStartError, env=env)
        except RuntimeStartError:
            if check:
                raise

    async def prepare(self, spec: ModelSpec) -> None:
        return None

    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        """Run `start` (it replaces the server in place)."""
        await self._run(self.options.start, spec, revision)
        return Instance(id=spec.name, model=spec.name, revision=revision,
                        health_url=self.options.health_url,
                        name=self.unit(spec.name) if self.options.unit else spec.name)

    async def stop(self, instance: Instance) -> None:
        """Stop the server: its unit, or the `stop` argv with the spec it last ran."""
        if self.options.unit is not None:
            await self._stop_unit(self.unit(instance.model))
            return
        spec_file = self.spec_dir / f"{instance.model}.json"
        if self.options.stop and spec_file.exists():
            spec = ModelSpec.model_validate(json.loads(spec_file.read_text()))
            await self._run(self.options.stop, spec, instance.revision)

    async def instances(self, model: str) -> list[Instance]:
        """Nothing to list: the command owns the server (a restart replaces it in place)."""
        return []

    async def aclose(self) -> None:
        return None
