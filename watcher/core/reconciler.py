"""The reconciler: the Sink the source session delivers to, and the Operator features ask.

It decides only one thing itself, the one confd and consul-template keep in the runner:
whether a change is new. It keeps the last *handled* revision of every model (applied, noop,
rejected or failed; loaded from the state at start, after recovery), and a change whose
revision equals it is dropped before anything wakes up: each revision is acted on exactly
once, also across restarts. Everything else it hands on:

    Scheduler  per-model queue, quiet window, one worker per model, max_parallel
    Pipeline   parse ▸ policy ▸ verify ▸ plan ▸ execute ▸ commit, to one Outcome
    Actions    operator rollback / restart
    Prefetcher the remote weights of a revision the admission keeps waiting, staged meanwhile
    Recorder   the one place outcomes are written, logged and published
    recovery   intents and unfinished rows left by a kill

Readiness: RECONCILED is emitted once every model of the first snapshot has been handled
(or the source is down at start: the last good state keeps serving meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping

from watcher.core.actions import Actions
from watcher.core.errors import WatcherError
from watcher.core.events import Event, EventBus, Kind
from watcher.core.executor import Executor
from watcher.core.gates import Gates
from watcher.core.health import GateResult
from watcher.core.outcome import Outcome, Verdict
from watcher.core.pipeline import Pipeline
from watcher.core.prefetch import Prefetcher
from watcher.core.recorder import Recorder
from watcher.core.recovery import recover
from watcher.core.scheduler import Scheduler
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.core.tasks import TaskSet
from watcher.settings import Settings
from watcher.sources.base import DELETED, Change

log = logging.getLogger("watcher.core.reconciler")


class Reconciler:
    def __init__(self, settings: Settings, state: State, bus: EventBus, executor: Executor,
                 *, source_name: str, gates: Gates | None = None) -> None:
        self.settings = settings
        #: Admission (core/gates.py): asked before a revision is handed to the scheduler.
        self.gates = gates or Gates()
        self._deferred: dict[str, Change] = {}  # key -> revision the admission keeps waiting
        self.state = state
        self.bus = bus
        self.executor = executor
        self.recorder = Recorder(state, bus)
        self.pipeline = Pipeline(settings, state, executor, self.recorder, bus,
                                 source_name=source_name)
        self.actions = Actions(settings, state, executor, self.pipeline, self.recorder)
        rc = settings.reconcile
        self.scheduler = Scheduler(self._handle, wait_min=rc.wait_min, wait_max=rc.wait_max,
                                   max_parallel=rc.max_parallel, on_settled=self._settled)
        self._handled: dict[str, str] = {}
        self._first: set[str] | None = None  # models of the first snapshot still to handle
        self._reconciled = False
        self._source_up: bool | None = None
        self._requests = TaskSet("operator requests")
        self.prefetch = Prefetcher(settings, state, executor)
        #: Set by the daemon: asks the source session for a fresh snapshot.
        self.resync: Callable[[], None] | None = None
        executor.on_health = self._on_health

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Recover from a kill mid-apply, then load what was handled (exactly once)."""
        await recover(self.state, self.executor, self.recorder)
        for model in self.state.models():
            handled = self.state.last_handled(model)
            if handled is not None:
                self._handled[model] = handled
        self.gates.bind(self.recheck)

    async def drain(self, grace: float) -> None:
        self.gates.bind(None)
        await self.prefetch.aclose()
        await self.scheduler.drain(grace)
        await self._requests.cancel_all()

    async def idle(self) -> None:
        await self.scheduler.idle()

    @property
    def immediate(self) -> bool:
        return self.scheduler.immediate

    @immediate.setter
    def immediate(self, value: bool) -> None:
        self.scheduler.immediate = value

    # -- Sink ------------------------------------------------------------------------
    def changed(self, change: Change) -> None:
        self._enqueue(change)

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        changes = dict(changes)
        known = set(self.state.all_applied()) | {m for m, r in self._handled.items() if r != DELETED}
        for key in sorted(known - set(changes)):
            if self.scheduler.pending(key) is None:
                changes[key] = Change.deletion(key)
        taken = {c.key for c in changes.values() if self._enqueue(c)}
        if self._first is None:
            self._first = taken
            if not taken:
                self._mark_reconciled()

    def connectivity(self, up: bool, detail: str = "") -> None:
        """Record the edge; the session has logged it (one line per outage)."""
        if up == self._source_up:
            return
        self._source_up = up
        self.state.set_source(up, detail or ("connected" if up else "unreachable"))
        self.bus.emit(Event(Kind.SOURCE_UP if up else Kind.SOURCE_DOWN, reason=detail))
        if not up and self._first is None:
            self._mark_reconciled()  # down at start: the last good state serves meanwhile

    def _enqueue(self, change: Change) -> bool:
        """Hand a change on unless its revision was handled already."""
        self._deferred.pop(change.key, None)  # latest wins, waiting or not
        handled = self._handled.get(change.key)
        if handled == change.revision:
            return False
        if change.deleted and handled in (None, DELETED) and self.state.applied(change.key) is None:
            return False
        decision = self.gates.admission.check(change) if not change.deleted else None
        if decision is not None and decision.verdict == "wait":
            self._deferred[change.key] = change  # not handled: asked again on recheck/restart
            self.prefetch.want(change)  # its remote weights staged meanwhile
            return False
        if decision is not None and decision.verdict == "refuse":
            self._refuse(change, decision.reason)
            return False
        self.scheduler.submit(change)
        return True

    def recheck(self) -> None:
        """The admission may answer differently now: ask again for every waiting revision."""
        for change in list(self._deferred.values()):
            if self._deferred.get(change.key) is change:
                self._enqueue(change)

    def _refuse(self, change: Change, reason: str) -> None:
        """The admission refused the revision for good: handled, recorded `rejected`."""
        self._handled[change.key] = change.revision
        try:
            row: int | None = self.state.record_seen(change.key, change.revision,
                                                     source=self.pipeline.source_name)
        except Exception:  # a full disk: the outcome is still logged and published
            log.exception("%s@%s: could not record the refusal", change.key, change.revision)
            row = None
        self.recorder.record(Outcome(Verdict.REJECTED, change.key, change.revision, reason,
                                     error="AdmissionRefused"), row)

    async def _handle(self, change: Change) -> Outcome:
        self._handled[change.key] = DELETED if change.deleted else change.revision
        return await self.pipeline.handle(change)

    def _settled(self, key: str) -> None:
        if self._first is not None and not self._reconciled:
            self._first.discard(key)
            if not self._first:
                self._mark_reconciled()

    def _mark_reconciled(self) -> None:
        if not self._reconciled:
            self._reconciled = True
            self.bus.emit(Event(Kind.RECONCILED))

    def _on_health(self, spec: ModelSpec, result: GateResult) -> None:
        self.bus.emit(Event(Kind.HEALTH, spec.name, version=spec.version,
                            reason=result.reason or None, ok=result.ok, probes=result.probes))

    # -- operator actions --------------------------------------------------------------
    async def rollback(self, model: str, to_revision: str | None = None, *,
                       by: str = "operator") -> Outcome:
        async with self.scheduler.slots, self.scheduler.lock(model):
            return await self.actions.rollback(model, to_revision, by)

    async def restart(self, model: str, *, by: str = "operator") -> Outcome:
        async with self.scheduler.slots, self.scheduler.lock(model):
            return await self.actions.restart(model, by)

    # -- Operator (watcher.features): schedule and return at once ------------------------
    def request_resync(self, model: str | None = None) -> None:
        """Re-read the source now (a webhook, an operator): the session takes a fresh
        snapshot inside its stream's order, so no older event can follow it."""
        if self.resync is not None:
            self.resync()

    def request_rollback(self, model: str, to_revision: str | None = None, *,
                         by: str = "operator") -> None:
        self._spawn(self.rollback(model, to_revision, by=by), f"rollback:{model}")

    def request_restart(self, model: str, *, by: str = "operator") -> None:
        self._spawn(self.restart(model, by=by), f"restart:{model}")

    def _spawn(self, coro: Coroutine[object, object, Outcome], name: str) -> None:
        self._requests.spawn(_refusals_logged(coro, name), name)


async def _refusals_logged(coro: Coroutine[object, object, Outcome], name: str) -> None:
    try:
        await coro
    except WatcherError as exc:
        log.error("%s refused: %s", name, exc.reason, extra={"reason": exc.reason})
    except asyncio.CancelledError:
        raise
