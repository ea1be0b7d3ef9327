"""`command` runtime: restart the model server by running an argv list (never a shell).

For servers managed by a script or a process supervisor. The command restarts in place
(`Instance.in_place`), so a failed restart is repaired by running it again with the
previous spec. The spec is written to a JSON file first, and the command gets it as
`{spec_file}` and in the environment (MODEL_WATCHER_SPEC_FILE, MODEL_WATCHER_MODEL,
MODEL_WATCHER_REVISION, MODEL_WATCHER_VERSION, MODEL_WATCHER_IMAGE). The environment is
`childenv.child_env`: `policy.env.base` + the spec's admitted `runtime.env` + those, never
the daemon's own environment. Placeholders in the argv: {name} {revision}
{version} {image} {spec_file} {python} (the daemon's own interpreter).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.childenv import EnvPolicy, child_env
from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.proc import run_argv
from watcher.runtimes.base import Instance, StepCheck

log = logging.getLogger("watcher.runtimes.command")

class CommandOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: list[str] = Field(min_length=1, description="argv that (re)starts the server")
    stop: list[str] | None = Field(None, description="argv that stops it (document deleted)")
    timeout: float = Field(120.0, gt=0)
    health_url: str | None = Field(None, description="base URL of the restarted server")

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
        values = {"name": spec.name, "revision": revision, "version": spec.version,
                  "image": spec.runtime.image or "", "spec_file": str(spec_file),
                  "python": sys.executable}
        args = [a.format_map(values) for a in argv]
        own = {"MODEL_WATCHER_SPEC_FILE": str(spec_file), "MODEL_WATCHER_MODEL": spec.name,
               "MODEL_WATCHER_REVISION": revision, "MODEL_WATCHER_VERSION": spec.version,
               "MODEL_WATCHER_IMAGE": values["image"]}
        try:
            env = child_env(spec.runtime.env, own, self.env_policy)
        except ValueError as exc:
            raise RuntimeStartError(f"{spec.name}: {exc}") from None
        log.info("running %s", args[0], extra={"model": spec.name, "revision": revision})
        await run_argv(args, seconds=self.options.timeout, error=RuntimeStartError, env=env)

    async def prepare(self, spec: ModelSpec) -> None:
        return None

    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        await self._run(self.options.start, spec, revision)
        return Instance(id=spec.name, model=spec.name, revision=revision,
                        health_url=self.options.health_url, in_place=True)

    async def promote(self, new: Instance, old: Instance | None, check: StepCheck) -> None:
        return None  # in place: traffic never moved

    async def discard(self, instance: Instance) -> None:
        return None

    async def instances(self, model: str) -> list[Instance]:
        return []

    async def remove(self, spec: ModelSpec) -> None:
        if self.options.stop:
            await self._run(self.options.stop, spec, "removed")

    async def aclose(self) -> None:
        return None
