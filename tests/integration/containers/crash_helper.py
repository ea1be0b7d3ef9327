"""Run in a subprocess by test_recovery: start a new container, reach the first traffic
step, say so on stdout, then hang there until the test kills this process with -9."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext
from watcher.runtimes.base import Instance
from watcher.runtimes.docker import DockerRuntime


async def main(options: dict[str, object], spec: ModelSpec, state_dir: Path) -> None:
    rt = DockerRuntime.create(options, PluginContext(state_dir=state_dir, environment="test"))
    old = (await rt.instances(spec.name))[0]
    await rt.prepare(spec)
    new = await rt.start(spec, "r2")

    async def check(inst: Instance) -> str | None:
        print("AT_STEP", inst.id, flush=True)
        await asyncio.sleep(3600)
        return None

    await rt.promote(new, old, check)


if __name__ == "__main__":
    opts, spec_doc, state = sys.argv[1:4]
    asyncio.run(main(json.loads(opts), ModelSpec.model_validate_json(spec_doc), Path(state)))
