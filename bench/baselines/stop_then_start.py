"""Baseline: the seed's naive update, stop the old container, then start the new one.

    pull new image → stop old → remove old → create new on the SAME host port → start

Nothing serves between "stop old" and "new listening", so every request in that window
fails; this is the comparison for the blue/green runtime in tests and benchmarks.

    python -m bench.baselines.stop_then_start --socket S --name N --image REF --port P
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from watcher.runtimes.engine import EngineClient, NotFound, RegistryAuth


@dataclass
class BaselineResult:
    container_id: str
    gap_seconds: float  # from "stop old" issued to "new container started"
    total_seconds: float


async def stop_then_start(
    engine: EngineClient, *, name: str, image: str, host_port: int, container_port: int = 8080,
    auth: RegistryAuth | None = None, labels: dict[str, str] | None = None,
    stop_timeout: int = 10,
) -> BaselineResult:
    """Replace container `name` by one running `image` on the same port, the naive way."""
    started = time.monotonic()
    await engine.pull(image, auth=auth)
    gap_start = time.monotonic()
    try:
        await engine.stop(name, stop_timeout)
        await engine.remove(name)
    except NotFound:
        pass
    cport = f"{container_port}/tcp"
    cid = await engine.create(name, {
        "Image": image,
        "Labels": labels or {},
        "ExposedPorts": {cport: {}},
        "HostConfig": {"PortBindings": {cport: [{"HostIp": "127.0.0.1",
                                                 "HostPort": str(host_port)}]}},
    })
    await engine.start(cid)
    now = time.monotonic()
    return BaselineResult(cid, now - gap_start, now - started)


def main() -> None:
    from pathlib import Path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", type=Path, default=Path("/var/run/docker.sock"))
    p.add_argument("--name", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--container-port", type=int, default=8080)
    args = p.parse_args()

    async def run() -> BaselineResult:
        engine = EngineClient(args.socket)
        try:
            return await stop_then_start(engine, name=args.name, image=args.image,
                                         host_port=args.port, container_port=args.container_port)
        finally:
            await engine.aclose()

    r = asyncio.run(run())
    print(f"stop-then-start: container {r.container_id[:12]}, nothing listening for "
          f"{r.gap_seconds:.3f}s (+ the server's own start-up), total {r.total_seconds:.3f}s")


if __name__ == "__main__":
    main()
