"""Registry failures and policy refusals: a clear error, and nothing running is stopped."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.infra.common import free_port
from tests.infra.images import BuiltImage
from tests.infra.nginx import Nginx
from tests.infra.registry import Registry
from tests.integration.containers.conftest import PODMAN_ONLY, RuntimeFactory, deploy, make_spec
from watcher.core.errors import PolicyError, RuntimeStartError
from watcher.plugins import PluginContext
from watcher.runtimes.docker import DockerRuntime


async def _serving(nginx: Nginx) -> str:
    async with httpx.AsyncClient(timeout=2) as c:
        return (await c.get(nginx.url + "/version")).text.strip()


@pytest.mark.parametrize("case", ["wrong-credentials", "missing-tag", "registry-down"])
async def test_pull_failure_is_a_clear_error_and_stops_nothing(
    case: str, make_runtime: RuntimeFactory, images: dict[str, BuiltImage],
    registry: Registry, nginx: Nginx, model: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = make_runtime()
    old = await deploy(good, make_spec(model, images["v1.0.0"]), "r1")
    rt, spec = good, make_spec(model, images["v1.1.0"])
    if case == "wrong-credentials":
        rt = make_runtime(registry_auth={"username": registry.username,
                                         "password": "not-the-password"})
        expected = "unauthorized"
    elif case == "missing-tag":
        spec = make_spec(model, images["v1.1.0"], version="v1.1.0",
                         ref=f"{registry.address}/mw/model-server:v9.9.9")
        expected = "manifest unknown"
    else:
        spec = make_spec(model, images["v1.1.0"],
                         ref=f"127.0.0.1:{free_port()}/mw/model-server:v1.1.0")
        expected = "connection refused"
    with pytest.raises(RuntimeStartError, match=expected) as err:
        await deploy(rt, spec, "r2")
    print(f"{case}: {err.value.reason}")
    assert [i.id for i in await good.instances(model)] == [old.id]
    assert await _serving(nginx) == "v1.0.0"
    assert "not-the-password" not in caplog.text + str(err.value)
    assert registry.password not in caplog.text


@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)
async def test_dev_image_is_refused_in_production_before_any_pull(
    images: dict[str, BuiltImage], make_runtime: RuntimeFactory, model: str,
) -> None:
    rt = make_runtime()
    prod = DockerRuntime(rt.opts, PluginContext(state_dir=rt.ctx.state_dir,
                                                environment="production"))
    try:
        with pytest.raises(PolicyError, match="dev build"):
            await prod.prepare(make_spec(model, images["v1.4.0-dev"], version="v1.4.0"))
        assert prod.pinned(make_spec(model, images["v1.4.0-dev"], version="v1.4.0")) is None
    finally:
        await prod.aclose()


@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)
async def test_engine_down_is_a_clear_error(
    images: dict[str, BuiltImage], make_runtime: RuntimeFactory, model: str, tmp_path: object,
) -> None:
    rt = make_runtime(socket="/nonexistent/podman.sock")
    with pytest.raises(RuntimeStartError, match="unreachable"):
        await rt.prepare(make_spec(model, images["v1.0.0"]))
