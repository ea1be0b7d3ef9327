"""The executor's branches against the in-tree fake server (watcher.fakes.servers)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from watcher.core.errors import ApplyError, HealthGateError, RuntimeStartError, TargetError
from watcher.core.executor import Executor, RestartStep
from watcher.core.plan import Plan
from watcher.core.spec import ModelSpec
from watcher.fakes.servers import FakeRouter, FakeRuntime, FakeServer, FakeTarget, ScriptedProber
from watcher.routers.base import StepPlan
from watcher.settings import Settings

FAST = {"period": 0.001, "failure_threshold": 2, "timeout": 0.1, "url": "fake://{model}/hot"}


def spec(version: str, t: float = 0.5, image: str = "img:1") -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "version": f"{version}.0.0", "runtime": {"image": image},
                                     "model": {"uri": "file:///w", "parameters": {"t": t}}})


def make(tmp_path: Path, *, target: bool = True, runtime: bool = True, in_place: bool = False,
         fallback: bool = True) -> tuple[Executor, FakeServer, ScriptedProber]:
    server = FakeServer()
    prober = ScriptedProber()
    settings = Settings(state_dir=tmp_path, health=FAST,  # type: ignore[arg-type]
                        reconcile={"fallback_to_restart": fallback})  # type: ignore[arg-type]
    executor = Executor(settings, FakeTarget(server) if target else None,
                        FakeRuntime(server, in_place=in_place) if runtime else None, prober=prober)
    return executor, server, prober


HOT = Plan("hot", ("model.parameters.t",))
RESTART = Plan("restart", ("runtime.image",))


async def test_hot_swap_passes_its_gate(tmp_path: Path) -> None:
    ex, server, prober = make(tmp_path)
    assert await ex.execute(HOT, spec("v2"), spec("v1"), "r2") == "hot"
    assert server.loaded["m"].version == "v2.0.0"
    assert prober.probed == ["fake://m/hot"]


async def test_a_failed_hot_swap_falls_back_to_a_restart(tmp_path: Path) -> None:
    ex, server, _ = make(tmp_path)
    assert isinstance(ex.target, FakeTarget)
    ex.target.fail = deque([TargetError("load refused")])
    assert await ex.execute(HOT, spec("v2"), spec("v1"), "r2") == "restart"
    assert [i.revision for i in server.instances.values()] == ["r2"]


async def test_without_fallback_the_hot_failure_is_the_verdict(tmp_path: Path) -> None:
    ex, _, _ = make(tmp_path, fallback=False)
    assert isinstance(ex.target, FakeTarget)
    ex.target.fail = deque([TargetError("load refused")])
    with pytest.raises(TargetError, match="load refused"):
        await ex.execute(HOT, spec("v2"), spec("v1"), "r2")


async def test_unhealthy_after_a_hot_swap_puts_the_previous_spec_back(tmp_path: Path) -> None:
    ex, server, _ = make(tmp_path, runtime=False)
    server.loaded["m"] = spec("v1")

    async def flaky(url: str, check: object) -> str | None:  # unhealthy with v2 only
        return "status 500" if server.loaded["m"].version == "v2.0.0" else None

    ex._prober = flaky  # type: ignore[assignment]
    with pytest.raises(HealthGateError) as err:
        await ex.execute(HOT, spec("v2"), spec("v1"), "r2")
    assert err.value.rolled_back and server.loaded["m"].version == "v1.0.0"
    assert "status 500" in err.value.reason


async def test_blue_green_failure_discards_the_new_instance(tmp_path: Path) -> None:
    ex, server, prober = make(tmp_path, target=False)
    await ex.execute(RESTART, spec("v1"), None, "r1")
    prober.unhealthy["fake://m/v2"] = "status 503"
    with pytest.raises(ApplyError) as err:
        await ex.execute(RESTART, spec("v2", image="img:2"), spec("v1"), "r2")
    assert not err.value.rolled_back  # the old one never stopped serving
    assert [i.revision for i in server.instances.values()] == ["r1"]


async def test_in_place_failure_restarts_the_previous_spec(tmp_path: Path) -> None:
    ex, _server, prober = make(tmp_path, target=False, in_place=True)
    await ex.execute(RESTART, spec("v1"), None, "r1")
    prober.unhealthy["fake://m/v2"] = "status 503"
    with pytest.raises(HealthGateError) as err:
        await ex.execute(RESTART, spec("v2", image="img:2"), spec("v1"), "r2")
    assert err.value.rolled_back
    assert isinstance(ex.runtime, FakeRuntime) and ex.runtime.serving("m") == ["v1.0.0"]


async def test_in_place_failure_whose_repair_fails_says_both(tmp_path: Path) -> None:
    ex, _, prober = make(tmp_path, target=False, in_place=True)
    await ex.execute(RESTART, spec("v1"), None, "r1")
    prober.unhealthy["fake://m/"] = "status 503"  # every version is unhealthy now
    with pytest.raises(RuntimeStartError, match=r"restarting v1\.0\.0 failed too"):
        await ex.execute(RESTART, spec("v2", image="img:2"), spec("v1"), "r2")


async def test_no_runtime_for_a_restart_plan(tmp_path: Path) -> None:
    ex, _, _ = make(tmp_path, runtime=False)
    with pytest.raises(RuntimeStartError, match="no runtime is configured"):
        await ex.execute(RESTART, spec("v2"), spec("v1"), "r2")


def with_router(tmp_path: Path) -> tuple[Executor, FakeServer, ScriptedProber, FakeRouter]:
    ex, server, prober = make(tmp_path, target=False)
    router = FakeRouter(plan=StepPlan(steps=[10, 50, 100]))
    ex.router = router
    return ex, server, prober, router


async def test_blue_green_moves_traffic_along_the_plan_then_stops_the_old(tmp_path: Path) -> None:
    ex, server, _, router = with_router(tmp_path)
    steps: list[RestartStep] = []
    ex.progress = lambda model, step: steps.append(step)
    await ex.execute(RESTART, spec("v1"), None, "r1")
    first = next(iter(server.instances.values()))
    await ex.execute(RESTART, spec("v2", image="img:2"), spec("v1"), "r2")
    (second,) = server.instances.values()
    assert second.revision == "r2" and first.id != second.id
    assert [w for _, w in router.history][-4:] == [
        {second.address: 10, first.address: 90}, {second.address: 50, first.address: 50},
        {second.address: 100, first.address: 0}, {second.address: 100}]
    assert [(s.phase, s.percent) for s in steps][-5:] == [
        ("started", 0), ("routing", 10), ("routing", 50), ("routing", 100), ("routed", 100)]


async def test_an_error_rate_mid_plan_puts_traffic_back_and_stops_the_new(tmp_path: Path) -> None:
    ex, server, _, router = with_router(tmp_path)
    await ex.execute(RESTART, spec("v1"), None, "r1")
    (first,) = server.instances.values()
    router.bad = {"127.0.0.1:20002": "error rate 30%"}  # the next instance's address
    with pytest.raises(HealthGateError, match="step 10%: error rate 30%"):
        await ex.execute(RESTART, spec("v2", image="img:2"), spec("v1"), "r2")
    assert list(server.instances.values()) == [first]
    assert router.weights["m"] == {first.address: 100}
