"""Blue/green replacement through the real engine, registry and nginx, under load."""

from __future__ import annotations

from tests.infra.images import BuiltImage
from tests.infra.nginx import LoadLoop, Nginx
from tests.infra.podman import PodmanService
from tests.integration.containers.conftest import RuntimeFactory, deploy, make_spec


async def test_first_deploy_then_blue_green_under_load_has_zero_failures(
    make_runtime: RuntimeFactory, images: dict[str, BuiltImage], nginx: Nginx,
    podman: PodmanService, model: str,
) -> None:
    rt = make_runtime()
    first = await deploy(rt, make_spec(model, images["v1.0.0"]), "r1")
    assert first.info["image"].endswith("@" + images["v1.0.0"].digest)

    with LoadLoop(nginx.url + "/version") as load:
        second = await deploy(rt, make_spec(model, images["v1.1.0"]), "r2")
        await _more_requests(load, 50)
    result = load.result
    print(f"blue/green: {result.sent} requests, {result.failed} failed, {dict(result.bodies)}")
    assert result.failed == 0, result.errors
    assert set(result.bodies) == {"v1.0.0", "v1.1.0"}

    live = await rt.instances(model)
    assert [i.id for i in live] == [second.id]
    assert live[0].info["role"] != first.info["role"]
    assert podman.containers(f"model-watcher.model={model}") == [second.info["name"]]


async def _more_requests(load: LoadLoop, n: int) -> None:
    import asyncio

    target = load.result.sent + n
    for _ in range(500):
        if load.result.sent >= target:
            return
        await asyncio.sleep(0.01)
