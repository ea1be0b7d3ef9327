"""Moving a model's traffic to a new instance along the router's step plan.

At each step: set the weights (the router returns once the requests of the previous weights
have finished), hold the step for its exposure time, then ask the health probe and what the
traffic says (error rate, latency: the router's Observation). A reason anywhere puts all
traffic back on the old instance and raises HealthGateError; the old instance never stopped.

`on_step(percent)` is told before each step is set, so the intent records the step being
entered: a daemon killed mid-promotion enters that step again, or reverts, as the gate then
allows (core/recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from watcher.core.errors import HealthGateError, WatcherError
from watcher.routers.base import Router
from watcher.runtimes.base import Instance

log = logging.getLogger("watcher.core.promotion")

Check = Callable[[Instance], Awaitable[str | None]]
StepHook = Callable[[int], Awaitable[None]]


async def promote(router: Router, new: Instance, old: Instance | None, check: Check,
                  on_step: StepHook, *, start_at: int = 0) -> None:
    """Move `new.model`'s traffic from `old` to `new` (steps above `start_at` percent)."""
    assert new.address is not None, "a routed instance has an address"
    if old is None or old.address is None or old.address == new.address:
        await on_step(100)
        await router.route(new.model, {new.address: 100})
        return
    plan = router.plan
    try:
        for pct in (p for p in plan.steps if p > start_at):
            await on_step(pct)
            await router.route(new.model, {new.address: pct, old.address: 100 - pct})
            observation = router.observe(new.model)
            if plan.hold:
                await asyncio.sleep(plan.hold)  # deliberate exposure time, not a readiness wait
            reason = await check(new)
            if reason is None and observation is not None:
                reason = observation.verdict(new.address, plan)
            if reason is not None:
                raise HealthGateError(f"traffic step {pct}%: {reason}; all traffic back on "
                                      f"{old.name or old.address}")
    except Exception as exc:
        await restore(router, old)
        if isinstance(exc, HealthGateError):
            raise
        what = exc.reason if isinstance(exc, WatcherError) else f"{type(exc).__name__}: {exc}"
        raise HealthGateError(f"traffic switch to {new.name or new.address} failed: {what}; "
                              f"all traffic back on {old.name or old.address}") from exc
    await router.route(new.model, {new.address: 100})


async def restore(router: Router, old: Instance) -> None:
    """All traffic back on `old` (logged, not raised, when the router refuses: the caller's
    own error is the one to report)."""
    if old.address is None:
        return
    try:
        await router.route(old.model, {old.address: 100})
    except WatcherError as exc:
        log.error("%s: putting all traffic back on %s failed: %s", old.model,
                  old.name or old.address, exc.reason, extra={"model": old.model})
