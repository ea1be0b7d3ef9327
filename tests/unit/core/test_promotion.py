"""Traffic moves along the router's step plan; any reason puts it all back on the old one."""

from __future__ import annotations

import pytest

from watcher.core.errors import HealthGateError
from watcher.core.promotion import promote
from watcher.fakes.servers import FakeRouter
from watcher.routers.base import StepPlan
from watcher.routers.nginx_control import TrafficError
from watcher.runtimes.base import Instance

A, B = "127.0.0.1:21000", "127.0.0.1:21001"
OLD = Instance("old", "m", "r1", address=A, name="old")
NEW = Instance("new", "m", "r2", address=B, name="new")


async def healthy(inst: Instance) -> str | None:
    return None


async def test_promotion_walks_the_plan_and_ends_on_new_only() -> None:
    router = FakeRouter(plan=StepPlan(steps=[10, 50, 100]))
    steps: list[int] = []

    async def record(pct: int) -> None:
        steps.append(pct)

    await promote(router, NEW, OLD, healthy, record)
    assert steps == [10, 50, 100]
    assert [w for _, w in router.history] == [{B: 10, A: 90}, {B: 50, A: 50}, {B: 100, A: 0},
                                              {B: 100}]


async def test_resuming_starts_above_the_step_reached() -> None:
    router = FakeRouter(plan=StepPlan(steps=[10, 50, 100]))

    async def nothing(pct: int) -> None:
        return None

    await promote(router, NEW, OLD, healthy, nothing, start_at=50)
    assert [w for _, w in router.history] == [{B: 100, A: 0}, {B: 100}]


async def test_without_an_old_instance_it_is_one_route() -> None:
    router = FakeRouter()

    async def nothing(pct: int) -> None:
        return None

    await promote(router, NEW, None, healthy, nothing)
    assert [w for _, w in router.history] == [{B: 100}]


async def test_a_failed_check_restores_old_and_raises() -> None:
    router = FakeRouter(plan=StepPlan(steps=[10, 30, 100]))
    answers = iter([None, "latency 900 ms"])

    async def check(inst: Instance) -> str | None:
        return next(answers)

    async def nothing(pct: int) -> None:
        return None

    with pytest.raises(HealthGateError, match="step 30%: latency 900 ms"):
        await promote(router, NEW, OLD, check, nothing)
    assert router.history[-1] == ("m", {A: 100})


async def test_what_the_traffic_says_aborts_too() -> None:
    router = FakeRouter(plan=StepPlan(steps=[10, 100]), bad={B: "error rate 12%"})

    async def nothing(pct: int) -> None:
        return None

    with pytest.raises(HealthGateError, match="step 10%: error rate 12%"):
        await promote(router, NEW, OLD, healthy, nothing)
    assert router.weights["m"] == {A: 100}


async def test_a_router_failure_mid_plan_also_restores_old() -> None:
    class Refusing(FakeRouter):
        async def route(self, model: str, weights: dict[str, int]) -> None:
            await super().route(model, weights)
            if len(self.history) == 2:
                raise TrafficError("nginx -t failed")

    router = Refusing(plan=StepPlan(steps=[10, 30, 100]))

    async def nothing(pct: int) -> None:
        return None

    with pytest.raises(HealthGateError, match="traffic switch to new failed: nginx -t failed"):
        await promote(router, NEW, OLD, healthy, nothing)
    assert router.history[-1] == ("m", {A: 100})
