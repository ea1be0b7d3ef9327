"""`serve(ctx)`: the daemon's fleet feature (watcher/features.py), for its whole lifetime.

It installs the fleet's Admission and RestartSlots into the daemon's gates FIRST, before its
first await: the feature task starts before the source session delivers anything, so no
revision can slip past while the fleet is still joining (it waits: "joining the fleet").
An invalid `[fleet]` section keeps every new revision waiting with the reason in `status`
(a member must not silently leave its fleet's rollouts), and is logged as an error.

Tasks, all under one TaskGroup: liveness, the report writer and its periodic re-report,
soak probes, the stream of rollout records, fresh reads for the admission, the controller
(campaigns; leads while elected). Each retries with backoff on its own: a center outage
never ends the feature, and the last good state keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from watcher.core.errors import SettingsError, SourceError, SourceUnavailable
from watcher.core.events import Event, Kind
from watcher.core.gates import AdmitAll, Decision, Unlimited
from watcher.fleet.backend import FleetBackend
from watcher.fleet.controller import Controller
from watcher.fleet.gates import FleetAdmission, FleetSlots
from watcher.fleet.member import NACOS_REPORT_LIMIT, Member
from watcher.fleet.record import RolloutRecord
from watcher.fleet.settings import FleetSettings, fleet_settings
from watcher.fleet.stats import STATS
from watcher.fleet.view import RolloutView
from watcher.settings import Settings
from watcher.sources.base import Change

if TYPE_CHECKING:
    from watcher.features import FeatureContext

log = logging.getLogger("watcher.fleet")
READS_AT_ONCE = 8


class Holding:
    """Every new revision waits, with a reason (the fleet is not running)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def check(self, change: Change) -> Decision:
        return Decision("wait", self.reason)


def create_backend(fleet: FleetSettings, settings: Settings) -> tuple[FleetBackend, int | None]:
    """The center's FleetBackend and the size limit of a report there."""
    options = settings.source.options()
    if settings.source.kind == "nacos":
        from watcher.fleet.nacos import NacosFleet

        return NacosFleet(fleet, options, settings.state_dir), NACOS_REPORT_LIMIT
    from watcher.fleet.etcd import EtcdFleet

    return EtcdFleet(fleet, options), None


async def serve(ctx: FeatureContext) -> None:
    gates = ctx.gates
    try:
        fleet = fleet_settings(ctx.settings)
    except SettingsError as exc:
        gates.admission = Holding(f"waiting: the [fleet] settings are invalid: {exc.reason}")
        raise
    if fleet is None:
        gates.admission, gates.restarts = AdmitAll(), Unlimited()
        gates.recheck()
        return
    gates.admission = Holding("waiting: joining the fleet")
    backend, limit = create_backend(fleet, ctx.settings)
    view = RolloutView()
    member = Member(ctx.settings, fleet, ctx.state, backend, view, ctx.operator, limit)
    gates.admission = FleetAdmission(fleet, view, lambda model, d, note: member.set_waiting(
        model, d.reason if d.verdict == "wait" else None, note))
    gates.restarts = FleetSlots(fleet, view, backend, member)

    def on_alive(alive: bool) -> None:
        member.alive = STATS.alive = alive
        (log.info if alive else log.warning)("fleet: member %s %s", fleet.member_id,
                                             "joined" if alive else "lost its liveness")
        member.changed()

    def on_leading(leading: bool) -> None:
        member.leading = STATS.leading = leading
        member.changed()

    controller = Controller(backend, view, lambda r, phase: _announce(ctx, r, phase), on_leading)

    def on_records(models: set[str]) -> None:
        for model in models:
            stored = view.record(model)
            if stored is not None:
                r = stored.record
                STATS.rollouts[model] = (r.step + 1, len(r.policy.steps), r.phase)
        gates.recheck()
        member.check_aborts(models)
        member.write_status(None)
        controller.poke()

    view.subscribe(on_records)
    unsubscribe = ctx.bus.subscribe(member.on_message)
    log.info("fleet: member %s (labels %s) on %s", fleet.member_id, fleet.labels or "-",
             ctx.settings.source.kind)
    try:
        async with asyncio.TaskGroup() as tg:
            for name, loop in (("liveness", lambda: backend.keep_alive(on_alive)),
                               ("report", member.run), ("re-report", member.tick),
                               ("probes", member.probes), ("records", _stream(backend, view)),
                               ("reads", _reads(backend, view)), ("controller", controller.run)):
                tg.create_task(_supervised(name, loop), name=f"fleet:{name}")
    finally:
        unsubscribe()
        gates.admission = Holding("waiting: the fleet feature stopped")
        gates.restarts = Unlimited()
        await backend.aclose()


async def _supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run `loop` for as long as the feature runs: an outage of the center (SourceError) or
    a defect (logged with its traceback) restarts it after a backoff, never ends the fleet.
    A CancelledError that is not ours (nacos-sdk-python cancels futures its callers await
    while it reconnects) is an outage too: it must not end the loop silently."""
    async for attempt in AsyncRetrying(retry=retry_if_exception_type(Exception),
                                       wait=wait_exponential_jitter(0.2, max=5.0),
                                       before_sleep=lambda state: _failed(name, state)):
        with attempt:
            try:
                await loop()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                raise SourceUnavailable(f"fleet {name}: a call was cancelled under it") from None


_last_failure: dict[str, float] = {}
#: a loop failing again within this long is the same outage: logged at DEBUG only
QUIET = 60.0


def _failed(name: str, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    now = time.monotonic()
    first = now - _last_failure.get(name, float("-inf")) > QUIET
    _last_failure[name] = now
    if not isinstance(exc, SourceError):
        log.error("fleet %s failed; restarting it", name, exc_info=exc)
    elif first:
        log.warning("fleet %s: %s; retrying with backoff (the last good state keeps serving)",
                    name, exc.reason)
    else:
        log.debug("fleet %s: %s; again shortly", name, exc.reason)


def _stream(backend: FleetBackend, view: RolloutView) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async for snapshot in backend.watch_rollouts():
            view.replace_all(snapshot)
    return run


def _reads(backend: FleetBackend, view: RolloutView) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def one(model: str) -> None:
            async with gate:
                started = time.time()
                view.read(model, await backend.read_rollout(model), started)

        while True:
            await view.wake.wait()
            view.wake.clear()
            models = sorted(view.wanted)
            if models:
                await asyncio.gather(*(one(m) for m in models))
    return run


def _announce(ctx: FeatureContext, record: RolloutRecord, phase: str) -> None:
    """One fleet-wide line per transition: the bus (alerts, metrics) and the audit log."""
    STATS.transitions[(record.model, phase)] += 1
    where = f"rollout {record.id} at {record.where()}" + (f": {record.reason}" if record.reason else "")
    level = logging.ERROR if phase == "aborted" else logging.INFO
    log.log(level, "%s: rollout %s %s", record.model, phase, where,
            extra={"model": record.model, "revision": record.revision, "reason": record.reason or None})
    ctx.bus.emit(Event(Kind.ROLLOUT, record.model, record.revision or None, record.version or None,
                       reason=where, phase=phase, ok=phase != "aborted"))
    ctx.audit.write(f"rollout_{phase}", model=record.model, revision=record.revision or None,
                    version=record.version or None, rollout=record.id, step=record.step + 1,
                    steps=len(record.policy.steps), reason=record.reason or None,
                    failed=list(record.failed) or None)

