"""Fixtures for the containers area: two Engine APIs, a private registry, nginx.

`engine` is parametrized over both engines the docker runtime supports: Podman's compatible
socket (`podman system service`) and Docker itself (Debian docker.io's dockerd, started by
tests/infra/dockerd.py). A test runs against both unless it narrows the parameter with
`@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)` (for what does not depend
on the engine: nginx's step plan, policy checks, a socket that does not exist).

Started once per session (registry, pushed images, each engine when first used); nginx and
a model name per test, so tests are isolated by the `model-watcher.model` label and their
own upstream. Images are built by podman in a build storage of its own and pushed to the
registry; each engine under test gets them only by pulling through its Engine API (the
runtime's own path). A server that cannot be started fails the test; nothing here skips.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra.dockerd import Dockerd
from tests.infra.engine_api import EngineAPI
from tests.infra.images import BuiltImage, build_and_push
from tests.infra.nginx import Nginx
from tests.infra.podman import PodmanEnv, PodmanService
from tests.infra.registry import Registry
from watcher.core.executor import Executor
from watcher.core.plan import Plan
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, parse_options
from watcher.routers.base import StepPlan
from watcher.routers.nginx import NginxRouter
from watcher.runtimes.base import Instance
from watcher.runtimes.docker import DockerOptions, DockerRuntime
from watcher.settings import Settings

IMAGES = {
    "v1.0.0": "good",
    "v1.1.0": "good",
    "v1.2.0": "unhealthy",
    "v1.3.0": "flaky",
    "v1.4.0-dev": "good",
    "v1.5.0": "crash",
}
#: Engine parameter -> the session fixture that starts it.
ENGINES = {"podman": "podman", "docker": "dockerd"}
#: For `@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)`.
PODMAN_ONLY = ["podman"]
DOCKER_ONLY = ["docker"]
_counter = itertools.count()


@pytest.fixture(scope="session")
def containers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("containers")


@pytest.fixture(scope="session")
def registry(containers_root: Path) -> Iterator[Registry]:
    reg = Registry(containers_root / "registry").start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def podman(containers_root: Path, registry: Registry) -> Iterator[PodmanService]:
    svc = PodmanService(containers_root / "engine", insecure=[registry.address]).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def dockerd(containers_root: Path, registry: Registry) -> Iterator[Dockerd]:
    d = Dockerd(containers_root / "dockerd", insecure=[registry.address]).start()
    yield d
    d.stop()


@pytest.fixture(scope="session", params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> EngineAPI:
    """The engine under test (its Engine API socket); starts it on first use."""
    service: PodmanService | Dockerd = request.getfixturevalue(ENGINES[request.param])
    return service.api


@pytest.fixture(scope="session")
def builder(containers_root: Path, registry: Registry) -> Iterator[PodmanEnv]:
    env = PodmanEnv(containers_root / "build", insecure=[registry.address])
    yield env
    env.cli("system", "prune", "--all", "--force", check=False)


@pytest.fixture(scope="session")
def images(builder: PodmanEnv, registry: Registry) -> dict[str, BuiltImage]:
    return build_and_push(builder, registry, IMAGES)


@pytest.fixture
def model(request: pytest.FixtureRequest) -> str:
    return f"m{next(_counter)}-{request.node.name[5:25].strip('_').replace('_', '-').lower()}"


@pytest.fixture
def nginx(tmp_path: Path, model: str) -> Iterator[Nginx]:
    ng = Nginx(tmp_path / "nginx", model).start()
    yield ng
    ng.stop()


class Stack(DockerRuntime):
    """The docker runtime with the nginx router it is deployed with (as the daemon pairs
    them from `[runtime]` and `[router]`)."""

    router: NginxRouter


RuntimeFactory = Callable[..., Stack]


@pytest.fixture
async def make_runtime(tmp_path: Path, engine: EngineAPI, registry: Registry, nginx: Nginx,
                       model: str) -> AsyncIterator[RuntimeFactory]:
    """Build docker runtimes (options overridable; step-plan options go to the router);
    closes them and removes the model's containers afterwards."""
    made: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        plan = {k: overrides.pop(k) for k in list(overrides) if k in StepPlan.model_fields}
        options = runtime_options(engine, registry) | overrides
        ctx = PluginContext(state_dir=tmp_path / "state", environment="test",
                            logger=logging.getLogger("watcher"))
        rt = Stack(parse_options(DockerOptions, options, "runtime"), ctx)
        rt.router = NginxRouter.create(nginx.options() | plan, ctx)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.aclose()
    engine.remove(*engine.containers(f"model-watcher.model={model}"))


def runtime_options(engine: EngineAPI, registry: Registry) -> dict[str, Any]:
    return {
        "socket": str(engine.socket),
        "registry_auth": {"username": registry.username, "password": registry.password},
        "ports": [21000, 21999],
        "stop_timeout": 5,
        "pull_timeout": 60,
    }


def make_spec(model: str, image: BuiltImage, version: str | None = None, ref: str | None = None,
              **runtime: Any) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": model, "version": version or image.tag,
        "runtime": {"image": ref or image.ref, **runtime},
        "model": {"uri": "file:///srv/models/none"},
    })


async def http_check(inst: Instance) -> str | None:
    """The step check the reconciler would pass: GET health_url + /health is 200."""
    async with httpx.AsyncClient(timeout=2) as c:
        return await _check(c, inst)


async def _check(client: httpx.AsyncClient, inst: Instance) -> str | None:
    assert inst.health_url
    try:
        resp = await client.get(inst.health_url + "/health")
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if resp.status_code == 200 else f"/health answered {resp.status_code}"


async def gate(inst: Instance, attempts: int = 100) -> str | None:
    """Poll `/health` until healthy (as the health gate would), bounded: about 5 s. One
    client for all attempts (a new httpx client costs ~0.15 s here: it loads the CA store)."""
    reason = None
    async with httpx.AsyncClient(timeout=2) as c:
        for _ in range(attempts):
            reason = await _check(c, inst)
            if reason is None:
                return None
            await asyncio.sleep(0.05)
    return reason


#: The health gate as the daemon would run it, quick: /health, 100 tries 50 ms apart.
FAST_HEALTH = {"period": 0.05, "failure_threshold": 100, "timeout": 2, "latency_ms": 2000}
RESTART = Plan("restart", ("runtime.image",))


async def deploy(rt: Stack, spec: ModelSpec, revision: str) -> Instance:
    """What the daemon does for a restart-class change (the real Executor: prepare, start,
    gate, promotion through the router along its plan, old stopped; a failure stops the new
    one); returns the instance that serves."""
    ex = Executor(Settings(health=FAST_HEALTH), None, rt, rt.router)  # type: ignore[arg-type]
    try:
        await ex.execute(RESTART, spec, None, revision)
    finally:
        if ex._http is not None:
            await ex._http.aclose()
    return (await rt.instances(spec.name))[0]
