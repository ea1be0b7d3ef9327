"""Availability during updates: failed requests and the longest gap a bounded load loop on
127.0.0.1 sees while a model server is updated, next to the stop-then-start baseline.

    python -m bench.availability                 # all four
    python -m bench.availability --only gunicorn

(a) MLServer: a hot swap through the `v2-repository` target, vs stopping MLServer and
    starting it again with the new model;
(b) gunicorn: the `signal` target's SIGHUP reload, vs stopping gunicorn and starting it again;
(c) containers behind nginx: the docker runtime's blue/green replacement on Podman's Engine
    API and on Docker's own (dockerd from Debian docker.io), vs the seed's stop-then-start
    sequence (bench/baselines/stop_then_start.py) on the same engine;
(d) llama-server: chat completions while the daemon swaps the weights through the
    `llama-server` target, vs stopping llama-server and starting it with the new model; also
    the time from the change to the first answer from the new weights (bench/llama_swap.py).

Our side is driven through the same plug-ins the daemon uses (target or runtime), so the
figures are the update mechanism's own, without the config center in front.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import emit, table


class Load:
    """Requests back to back to a loopback URL (bounded in count and time) until stopped."""

    def __init__(self, url: str, body: dict[str, Any] | None = None, max_requests: int = 50_000,
                 max_seconds: float = 180) -> None:
        assert url.startswith("http://127.0.0.1:"), "load only ever goes to loopback"
        self.url, self.body = url, body
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.sent = self.failed = 0
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = last_ok = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and self.sent < self.max_requests \
                    and time.monotonic() - started < self.max_seconds:
                self.sent += 1
                try:
                    r = (client.post(self.url, json=self.body) if self.body is not None
                         else client.get(self.url))
                    ok = r.status_code < 500
                except httpx.HTTPError:
                    ok = False
                now = time.monotonic()
                if ok:
                    self.longest_gap = max(self.longest_gap, now - last_ok)
                    last_ok = now
                else:
                    self.failed += 1
                time.sleep(0.002)

    def __enter__(self) -> Load:
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join(30)

    def result(self) -> dict[str, Any]:
        return {"requests": self.sent, "failed": self.failed, "longest_gap_ms": self.longest_gap * 1000}


def bench_mlserver(root: Path) -> dict[str, Any]:
    from tests.infra.mlserver import IMPLEMENTATION, MLServer, infer_body, train_models
    from watcher.core.spec import ModelSpec
    from watcher.plugins import PluginContext, create

    first, second = train_models(root / "models")
    out: dict[str, Any] = {}
    ml = MLServer(root / "ml-hot")
    ml.add_model("m", first)
    ml.start()
    try:
        target = create("target", {"kind": "v2-repository", "url": ml.url, "repository": str(ml.repository),
                                   "ready_timeout": 60}, PluginContext(state_dir=root / "st", environment="bench"))
        new = ModelSpec.model_validate({"name": "m", "version": "v1.1.0", "model": {
            "uri": second.as_uri(), "implementation": IMPLEMENTATION}})
        with Load(ml.url + "/v2/models/m/infer", infer_body()) as load:
            asyncio.run(target.apply(new, None))
        out["model-watcher hot swap (v2-repository)"] = load.result()
        with Load(ml.url + "/v2/models/m/infer", infer_body()) as load:
            ml.stop()
            ml.add_model("m", first)
            ml.start()
        out["baseline: stop MLServer, start it again"] = load.result()
    finally:
        ml.stop()
    return out


def bench_gunicorn(root: Path) -> dict[str, Any]:
    import json

    from tests.infra.gunicorn_app import Gunicorn
    from watcher.core.spec import ModelSpec
    from watcher.plugins import PluginContext, create

    cfg = root / "gunicorn.json"
    spec = {"name": "g", "version": "v1.0.0", "model": {"uri": "file:///m", "parameters": {"t": 0.1}}}
    cfg.write_text(json.dumps(spec))
    g = Gunicorn(root / "gunicorn", cfg, workers=2).start()
    out: dict[str, Any] = {}
    try:
        target = create("target", {"kind": "signal", "pidfile": str(g.pidfile), "spec_file": str(cfg)},
                        PluginContext(state_dir=root / "st", environment="bench"))
        with Load(g.url) as load:
            for i in range(3):
                new = ModelSpec.model_validate({**spec, "version": f"v1.{i + 1}.0"})
                asyncio.run(target.apply(new, None))
                time.sleep(1.5)
        out["model-watcher SIGHUP reload x3 (signal)"] = load.result()
        with Load(g.url) as load:
            g.stop()
            g.start()
        out["baseline: stop gunicorn, start it again"] = load.result()
    finally:
        g.stop()
    return out


def bench_containers(root: Path) -> dict[str, Any]:
    from pydantic import SecretStr

    from bench.baselines.stop_then_start import stop_then_start
    from tests.infra.common import free_port
    from tests.infra.dockerd import Dockerd
    from tests.infra.images import build_and_push
    from tests.infra.nginx import Nginx
    from tests.infra.podman import PodmanEnv, PodmanService
    from tests.infra.registry import Registry
    from watcher.core.executor import Executor
    from watcher.core.plan import Plan
    from watcher.core.spec import ModelSpec
    from watcher.plugins import PluginContext
    from watcher.routers.nginx import NginxOptions, NginxRouter, NginxUpstream
    from watcher.runtimes.docker import DockerRuntime
    from watcher.runtimes.engine import EngineClient, RegistryAuth
    from watcher.settings import Settings

    out: dict[str, Any] = {}
    reg = Registry(root / "registry").start()
    podman = PodmanService(root / "engine", insecure=[reg.address]).start()
    dockerd = Dockerd(root / "dockerd", insecure=[reg.address])
    builder = PodmanEnv(root / "build", insecure=[reg.address])
    try:
        dockerd.start()
        images = build_and_push(builder, reg, {"v1.0.0": "good", "v1.1.0": "good"})
        runs = [(label, engine) for engine in (podman.api, dockerd.api) for label in ("bluegreen", "baseline")]
        for label, engine in runs:
            model = f"bench-{label}-{engine.kind}"
            ng = Nginx(root / f"nginx-{label}-{engine.kind}", model).start()
            try:
                if label == "bluegreen":
                    ctx = PluginContext(state_dir=root / "st", environment="bench",
                                        logger=logging.getLogger("bench"))
                    rt = DockerRuntime.create({
                        "socket": str(engine.socket), "ports": [22000, 22999],
                        "registry_auth": {"username": reg.username, "password": reg.password},
                        "stop_timeout": 5}, ctx)
                    # the daemon's own path: the executor, the runtime and the nginx router
                    ex = Executor(Settings(health={"period": 0.1, "failure_threshold": 100,  # type: ignore[arg-type]
                                                   "latency_ms": 2000}),
                                  None, rt, NginxRouter.create(ng.options(), ctx))

                    def spec(tag: str, m: str = model) -> ModelSpec:
                        return ModelSpec.model_validate({"name": m, "version": tag, "runtime": {
                            "image": images[tag].ref}, "model": {"uri": "file:///m"}})

                    restart = Plan("restart", ("runtime.image",))
                    asyncio.run(ex.execute(restart, spec("v1.0.0"), None, "r1"))
                    with Load(ng.url + "/version") as load:
                        asyncio.run(ex.execute(restart, spec("v1.1.0"), spec("v1.0.0"), "r2"))
                    asyncio.run(ex.aclose())
                    out[f"model-watcher blue/green behind nginx (docker runtime, {ENGINE[engine.kind]})"] = \
                        load.result()
                else:
                    port = free_port()
                    auth = RegistryAuth(reg.username, SecretStr(reg.password))

                    async def naive(tag: str, port: int = port, model: str = model, auth: Any = auth,
                                    socket: Path = engine.socket) -> None:
                        client = EngineClient(socket)
                        try:
                            await stop_then_start(client, name=f"mw-{model}", image=images[tag].ref, host_port=port,
                                                  auth=auth, labels={"model-watcher.model": model}, stop_timeout=5)
                        finally:
                            await client.aclose()

                    asyncio.run(naive("v1.0.0"))
                    up = NginxUpstream(NginxOptions.model_validate(
                        {k: str(v).replace("{model}", model) for k, v in ng.options().items()}))
                    asyncio.run(up.apply({f"127.0.0.1:{port}": 100}))
                    time.sleep(0.5)
                    with Load(ng.url + "/version") as load:
                        asyncio.run(naive("v1.1.0"))
                        time.sleep(1.0)
                    out[f"baseline: stop-then-start behind nginx ({ENGINE[engine.kind]})"] = load.result()
            finally:
                ng.stop()
                engine.remove(*engine.containers(f"model-watcher.model={model}"))
    finally:
        dockerd.stop()
        podman.stop()
        reg.stop()
        builder.cli("system", "prune", "--all", "--force", check=False)
    return out


ENGINE = {"podman": "Podman 4.3", "docker": "Docker 20.10"}


def bench_llama(root: Path) -> dict[str, Any]:
    from bench.llama_swap import bench_llama as run

    return run(root, Load)


BENCHES = {"mlserver": bench_mlserver, "gunicorn": bench_gunicorn, "containers": bench_containers,
           "llama": bench_llama}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(BENCHES))
    args = p.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for name, fn in BENCHES.items():
            if args.only and name != args.only:
                continue
            (Path(tmp) / name).mkdir()
            results[name] = fn(Path(tmp) / name)
            print(f"  {name}: {results[name]}", flush=True)
    rows = [[group, way, r["requests"], r["failed"], r["longest_gap_ms"],
             r["first_new_ms"] if r.get("first_new_ms") is not None else "-"]
            for group, ways in results.items() for way, r in ways.items()]
    text = table("availability during updates (bounded load loop on 127.0.0.1)",
                 ["server", "update", "requests", "failed", "longest gap ms",
                  "first answer from new model ms"], rows)
    emit("availability", text, {"results": results})


if __name__ == "__main__":
    main()
