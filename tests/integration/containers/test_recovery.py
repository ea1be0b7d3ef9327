"""Recovery: a process killed -9 between "new started" and "old stopped" (the next one finds
both by label and finishes or reverts cleanly, with no failed request through nginx), and
the engine itself restarting under a serving container."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest

from tests.infra.common import ROOT, Proc, http_ok, wait_until
from tests.infra.dockerd import Dockerd
from tests.infra.engine_api import EngineAPI
from tests.infra.images import BuiltImage
from tests.infra.nginx import LoadLoop, Nginx
from tests.infra.registry import Registry
from tests.integration.containers.conftest import (
    DOCKER_ONLY,
    RuntimeFactory,
    deploy,
    http_check,
    make_spec,
    runtime_options,
)
from watcher.routers.nginx import read_weights


# Both outcomes make the same engine calls (list by label, stop, remove): Docker runs one.
@pytest.mark.parametrize(("engine", "outcome"),
                         [("podman", "revert"), ("podman", "finish"), ("docker", "finish")],
                         indirect=["engine"])
async def test_kill9_mid_promote_is_found_by_label_and_converges(
    outcome: str, make_runtime: RuntimeFactory, images: dict[str, BuiltImage], nginx: Nginx,
    engine: EngineAPI, registry: Registry, model: str, tmp_path: object,
) -> None:
    options = runtime_options(engine, registry, nginx) | {"steps": [30, 100]}
    rt = make_runtime(**options)
    old = await deploy(rt, make_spec(model, images["v1.0.0"]), "r1")
    spec = make_spec(model, images["v1.1.0"])
    proc = Proc([sys.executable, "-m", "tests.integration.containers.crash_helper",
                 json.dumps(options), spec.model_dump_json(), str(rt.ctx.state_dir)],
                rt.ctx.state_dir / "crash-helper.log", cwd=ROOT)
    try:
        wait_until(lambda: "AT_STEP" in proc.output(), 60, "the helper to reach step 30%")
        proc.kill9()
    finally:
        proc.stop()

    # a new process (here: a fresh runtime object) finds both by their labels
    again = make_runtime(**options)
    found = await again.instances(model)
    assert [i.revision for i in found] == ["r1", "r2"]
    assert [i.info["weight"] for i in found] == [70, 30]
    assert {i.info["role"] for i in found} == {"blue", "green"}
    survivor, leftover = found
    assert survivor.id == old.id

    with LoadLoop(nginx.url + "/version") as load:
        if outcome == "revert":
            await again.discard(leftover)
            expected, body = survivor, "v1.0.0"
        else:
            await again.promote(leftover, survivor, http_check)
            expected, body = leftover, "v1.1.0"
    assert load.result.failed == 0, load.result.errors
    assert [i.id for i in await again.instances(model)] == [expected.id]
    assert read_weights(nginx.upstream_file) == {expected.info["addr"]: 100}
    assert engine.containers(f"model-watcher.model={model}") == [expected.info["name"]]
    assert body in load.result.bodies


@pytest.mark.parametrize("engine", DOCKER_ONLY, indirect=True)
async def test_serving_container_is_back_after_dockerd_restarts(
    make_runtime: RuntimeFactory, images: dict[str, BuiltImage], nginx: Nginx,
    dockerd: Dockerd, model: str,
) -> None:
    """dockerd's shutdown (a package upgrade, a reboot) stops every container, and only a
    restart policy starts one again; the daemon would not redeploy a revision it applied.
    (Podman's API service can restart under its containers: they keep running.)"""
    rt = make_runtime()
    first = await deploy(rt, make_spec(model, images["v1.0.0"]), "r1")
    await asyncio.to_thread(dockerd.restart)
    await asyncio.to_thread(wait_until, lambda: http_ok(nginx.url + "/version") and
                            _get(nginx.url + "/version") == "v1.0.0", 30,
                            "the container to serve again after dockerd restarted")
    assert [i.id for i in await rt.instances(model)] == [first.id]
    second = await deploy(rt, make_spec(model, images["v1.1.0"]), "r2")
    assert [i.id for i in await rt.instances(model)] == [second.id]
    assert _get(nginx.url + "/version") == "v1.1.0"


def _get(url: str) -> str:
    return httpx.get(url, timeout=2).text.strip()
