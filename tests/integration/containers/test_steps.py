"""Step plans through real nginx: weights at each step, and an error rate that aborts."""

from __future__ import annotations

import asyncio

import pytest

from tests.infra.images import BuiltImage
from tests.infra.nginx import LoadLoop, Nginx
from tests.integration.containers.conftest import (
    PODMAN_ONLY,
    RuntimeFactory,
    deploy,
    gate,
    http_check,
    make_spec,
)
from watcher.core.errors import HealthGateError
from watcher.core.promotion import promote
from watcher.routers.nginx import read_weights
from watcher.runtimes.base import Instance

# The step plan is nginx's business; the engine calls are those of test_blue_green.
pytestmark = pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)


async def test_step_plan_5_10_30_60_100_is_seen_in_nginx_config_at_each_step(
    make_runtime: RuntimeFactory, images: dict[str, BuiltImage], nginx: Nginx, model: str,
) -> None:
    rt = make_runtime(steps=[5, 10, 30, 60, 100], hold=0.2)
    old = await deploy(rt, make_spec(model, images["v1.0.0"]), "r1")
    new_spec = make_spec(model, images["v1.1.0"])
    await rt.prepare(new_spec)
    new = await rt.start(new_spec, "r2")
    assert await gate(new) is None
    seen: list[tuple[dict[str, int], bool]] = []

    async def check(inst: Instance) -> str | None:
        text = nginx.upstream_file.read_text()
        seen.append((read_weights(nginx.upstream_file), f"server {old.address} backup" in text))
        return await http_check(inst)

    async def step(pct: int) -> None:
        return None

    with LoadLoop(nginx.url + "/version") as load:
        await promote(rt.router, new, old, check, step)
        await rt.stop(old)
    n, o = new.address, old.address
    assert seen == [
        ({n: 5, o: 95}, False), ({n: 10, o: 90}, False), ({n: 30, o: 70}, False),
        ({n: 60, o: 40}, False), ({n: 100}, True),
    ]
    assert read_weights(nginx.upstream_file) == {n: 100}
    assert load.result.failed == 0, load.result.errors
    assert [i.id for i in await rt.instances(model)] == [new.id]


async def test_injected_error_rate_aborts_and_restores_all_traffic_to_old(
    make_runtime: RuntimeFactory, images: dict[str, BuiltImage], nginx: Nginx, model: str,
) -> None:
    """v1.3.0 passes its /health but answers 500 on /: nginx's own log catches it."""
    rt = make_runtime(steps=[50, 100], hold=1.0, max_error_rate=0.05, min_requests=5)
    old = await deploy(rt, make_spec(model, images["v1.0.0"]), "r1")
    with LoadLoop(nginx.url + "/") as load:
        with pytest.raises(HealthGateError, match="error rate") as err:
            await deploy(rt, make_spec(model, images["v1.3.0"]), "r2")
        after_abort = load.result.sent, load.result.failed
        await asyncio.sleep(0.5)
    print(f"error-rate abort: {err.value}; load {load.result.sent} sent, "
          f"{load.result.failed} failed during the 50% step")
    assert read_weights(nginx.upstream_file) == {old.address: 100}
    assert load.result.failed > 0  # the injected errors, during the 50 % step only
    assert load.result.failed == after_abort[1], "requests failed after the abort"
    assert load.result.sent > after_abort[0] + 10
    assert [i.id for i in await rt.instances(model)] == [old.id]
