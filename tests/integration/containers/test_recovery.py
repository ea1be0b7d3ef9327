"""A process killed -9 between "new started" and "old stopped": the next one finds both by
label and finishes or reverts cleanly, with no failed request through nginx."""

from __future__ import annotations

import json
import sys

import pytest

from tests.infra.common import ROOT, Proc, wait_until
from tests.infra.engine_api import EngineAPI
from tests.infra.images import BuiltImage
from tests.infra.nginx import LoadLoop, Nginx
from tests.infra.registry import Registry
from tests.integration.containers.conftest import (
    RuntimeFactory,
    deploy,
    http_check,
    make_spec,
    runtime_options,
)
from watcher.routers.nginx import read_weights


@pytest.mark.parametrize("outcome", ["revert", "finish"])
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
