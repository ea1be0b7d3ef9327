"""One change of one model, from the source's bytes to a recorded Outcome.

    update:  parse ▸ policy ▸ verify  (any refusal: REJECTED, server untouched)
             ▸ plan (noop | hot | restart) ▸ intent ▸ execute + health gate ▸ commit | FAILED
    delete:  keep the last spec serving, or unload the model (on_delete)

`handle()` is the fault boundary of a model's worker: it never raises (except when
cancelled). Whatever goes wrong, a defect included, ends as one Outcome with a one-line
reason, recorded in history, audit, metrics and alerts, and whatever the apply had started
is abandoned (core/executor.py), so nothing stays `pending` and the worker goes on with
the model's next revision. Every handling has a deadline (`reconcile.apply_timeout`).

Transient failures (a timeout or a refused connection while talking to the model server,
the engine or a registry: `ApplyError.transient`) are retried `reconcile.retries` times
with exponential backoff before the revision is recorded failed. The retries belong to the
one handling of the revision: one history row, one outcome, so exactly-once holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from watcher.core import policy
from watcher.core.errors import ApplyError, RejectedError, WatcherError
from watcher.core.events import Event, EventBus, Kind
from watcher.core.executor import Executor
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.core.plan import Plan, make_plan
from watcher.core.recorder import Recorder
from watcher.core.recovery import abandon
from watcher.core.spec import ModelSpec, parse_document
from watcher.core.state import State
from watcher.observability.tracing import get_tracer
from watcher.settings import Settings
from watcher.sources.base import Change

log = logging.getLogger("watcher.core.pipeline")


class Pipeline:
    def __init__(self, settings: Settings, state: State, executor: Executor,
                 recorder: Recorder, bus: EventBus, *, source_name: str) -> None:
        self.settings = settings
        self.state = state
        self.executor = executor
        self.recorder = recorder
        self.bus = bus
        self.source_name = source_name
        executor.progress = lambda model, step: state.set_intent_step(model, step.encode())

    # -- the fault boundary ---------------------------------------------------------
    async def handle(self, change: Change) -> Outcome:
        """Handle `change` to one recorded Outcome; never raises but CancelledError."""
        tracer = get_tracer()
        with tracer.span("revision", model=change.key, revision=change.revision):
            trace_id = tracer.trace_id()
            row: int | None = None
            try:
                row = self.state.record_seen(change.key, change.revision,
                                             source=self.source_name, trace_id=trace_id)
                async with asyncio.timeout(self.settings.reconcile.apply_timeout):
                    if change.deleted:
                        return await self._delete(change, row, trace_id)
                    return await self._update(change, row, trace_id)
            except Exception as exc:  # the boundary: a defect becomes a failed revision
                return await self._contain(change, row, exc, trace_id)

    async def _contain(self, change: Change, row: int | None, exc: Exception,
                       trace_id: str | None) -> Outcome:
        if isinstance(exc, TimeoutError):
            reason = (f"did not finish within reconcile.apply_timeout "
                      f"({self.settings.reconcile.apply_timeout:g}s)")
        else:
            reason = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.error("%s@%s: %s", change.key, change.revision, reason, exc_info=exc,
                      extra={"model": change.key, "revision": change.revision})
        await abandon(self.executor, self.state.intent(change.key), self.state.applied(change.key))
        return self.recorder.record(Outcome(
            Verdict.FAILED, change.key, change.revision, reason, trace_id=trace_id,
            action=Action.DELETE if change.deleted else Action.UPDATE,
            error=type(exc).__name__), row)

    # -- a new revision ---------------------------------------------------------------
    async def _update(self, change: Change, row: int, trace_id: str | None) -> Outcome:
        key, revision = change.key, change.revision
        tracer = get_tracer()
        self.bus.emit(Event(Kind.SEEN, key, revision, trace_id=trace_id))
        started = time.monotonic()
        applied = self.state.applied(key)
        previous = ModelSpec.model_validate(applied.spec) if applied else None
        try:
            with tracer.span("validate"):
                assert change.content is not None
                spec = parse_document(change.content, key=key,
                                      max_bytes=self.settings.reconcile.max_document_bytes)
                self.state.update_seen(row, version=spec.version, spec=spec.canonical())
                policy.check(spec, environment=self.settings.environment,
                             settings=self.settings.policy, applied=previous)
        except RejectedError as exc:
            return self.recorder.record(Outcome(
                Verdict.REJECTED, key, revision, exc.reason, error=type(exc).__name__,
                trace_id=trace_id), row)
        try:
            with tracer.span("verify"):
                await self.executor.verify(spec)  # remote weights: staged into the cache
        except (RejectedError, ApplyError) as exc:  # ApplyError: fetching the weights failed
            verdict = Verdict.REJECTED if isinstance(exc, RejectedError) else Verdict.FAILED
            return self.recorder.record(Outcome(
                verdict, key, revision, exc.reason, error=type(exc).__name__,
                version=spec.version, trace_id=trace_id), row)
        return await self.apply(row, spec, previous, revision, action=Action.UPDATE,
                                by="source", started=started, trace_id=trace_id,
                                observed_at=change.observed_at,
                                previous_revision=applied.revision if applied else None)

    async def apply(self, row: int, spec: ModelSpec, previous: ModelSpec | None, revision: str,
                    *, action: Action, by: str, started: float, trace_id: str | None,
                    observed_at: float | None = None, previous_revision: str | None = None,
                    reason: str = "") -> Outcome:
        """Plan, act and commit an accepted spec (a new revision, or a rollback's target)."""
        with get_tracer().span("plan"):
            plan = make_plan(previous, spec, hot_paths=self.executor.hot_paths,
                             can_restart=self.executor.can_restart)

        base = Outcome(Verdict.NOOP, spec.name, revision, reason or plan.reason, action=action,
                       by=by, version=spec.version, plan=plan, trace_id=trace_id)
        if plan.kind == "noop":
            return self.recorder.record(base, row, spec=spec, previous_revision=previous_revision)
        self.state.write_intent(spec.name, revision, spec.canonical(),
                                previous.canonical() if previous else None, plan.kind)
        self.bus.emit(Event(Kind.APPLYING, spec.name, revision, spec.version, plan=plan,
                            trace_id=trace_id))
        try:
            how = await self._execute(plan, spec, previous, revision)
        except ApplyError as exc:
            restored = previous.version if exc.rolled_back and previous is not None else None
            return self.recorder.record(replace(
                base, verdict=Verdict.FAILED, reason=exc.reason, error=type(exc).__name__,
                restored=restored, duration=time.monotonic() - started), row)
        return self.recorder.record(replace(
            base, verdict=Verdict.APPLIED, how=how, reason=reason,
            duration=time.monotonic() - started, observed_at=observed_at),
            row, spec=spec, previous_revision=previous_revision)

    async def _execute(self, plan: Plan, spec: ModelSpec, previous: ModelSpec | None,
                       revision: str) -> str:
        """`executor.execute`, retried while it fails transiently."""
        rc = self.settings.reconcile
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + rc.retries),
            wait=wait_exponential_jitter(multiplier=rc.retry_backoff, max=rc.retry_backoff * 8),
            retry=retry_if_exception(lambda e: isinstance(e, ApplyError) and e.transient),
            before_sleep=lambda state: _retrying(spec.name, revision, state, 1 + rc.retries),
            reraise=True)
        how: str = await retrying(self.executor.execute, plan, spec, previous, revision)
        return how

    # -- a deleted document --------------------------------------------------------------
    async def _delete(self, change: Change, row: int, trace_id: str | None) -> Outcome:
        key = change.key
        base = Outcome(Verdict.DELETED, key, change.revision, action=Action.DELETE,
                       trace_id=trace_id)
        if self.settings.reconcile.on_delete == "unload" and self.state.applied(key):
            try:
                await self.executor.remove(key)
            except WatcherError as exc:
                return self.recorder.record(replace(
                    base, verdict=Verdict.FAILED, error=type(exc).__name__,
                    reason=f"document deleted; unload failed: {exc.reason}"), row)
            return self.recorder.record(replace(
                base, reason="document deleted; model unloaded", unloaded=True), row)
        return self.recorder.record(replace(
            base, reason="document deleted; the last applied spec keeps serving "
            "(on_delete=keep)"), row)


def _retrying(model: str, revision: str, state: RetryCallState, attempts: int) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    reason = exc.reason if isinstance(exc, WatcherError) else str(exc)
    log.warning("%s@%s: transient failure (%s); retrying in %.1fs (attempt %d of %d)", model,
                revision, reason, wait, state.attempt_number + 1, attempts,
                extra={"model": model, "revision": revision, "reason": reason})
