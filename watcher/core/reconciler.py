"""The reconciler: coalesce, compare, validate, plan, execute, gate, commit or roll back.

It is the `Sink` every source delivers to. Sink calls may come from any thread; they only
hop onto the event loop and record the latest change per key. One worker task per key (while
that key has work) serializes everything done to a model: a burst ends in one apply of the
latest revision (quiescence), and a revision already handled (applied, rejected or failed)
is dropped before anything wakes up, so each revision is acted on exactly once, also across
restarts (the handled revisions live in the state database).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from watcher.core import policy
from watcher.core.errors import ApplyError, RejectedError, WatcherError
from watcher.core.events import Event, EventBus, Kind
from watcher.core.executor import Executor
from watcher.core.health import GateResult
from watcher.core.plan import make_plan
from watcher.core.quiescence import Quiescence
from watcher.core.spec import ModelSpec, parse_document
from watcher.core.state import State
from watcher.observability.audit import AuditLog
from watcher.observability.tracing import get_tracer
from watcher.settings import Settings
from watcher.sources.base import Change, Source

log = logging.getLogger("watcher.core.reconciler")
DELETED = "deleted"


@dataclass
class Outcome:
    model: str
    revision: str
    outcome: str  # applied | noop | rejected | failed | rolled_back | deleted | skipped
    reason: str = ""


class Reconciler:
    def __init__(self, settings: Settings, state: State, bus: EventBus, executor: Executor,
                 *, source_name: str, source: Source | None = None,
                 audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.state = state
        self.bus = bus
        self.executor = executor
        self.source = source
        self.source_name = source_name
        self.audit = audit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, Change] = {}
        self._quiet: dict[str, Quiescence] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._handled: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Applies share one model server: a burst over many models must not overload it.
        self._slots = asyncio.Semaphore(settings.reconcile.max_parallel)
        self._first_snapshot_keys: set[str] | None = None
        self._reconciled = False
        self._source_up: bool | None = None
        self._background: set[asyncio.Task[object]] = set()
        self.outcomes: list[Outcome] = []
        self.immediate = False  # `once`: no quiescence wait
        executor.on_health = self._on_health

    def _on_health(self, spec: ModelSpec, result: GateResult) -> None:
        self.bus.emit(Event(Kind.HEALTH, spec.name, version=spec.version, reason=result.reason or None,
                            fields={"ok": result.ok, "probes": result.probes}))

    # -- lifecycle -------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for model in self.state.models():
            handled = self.state.last_handled(model)
            if handled is not None:
                self._handled[model] = handled

    async def recover(self) -> None:
        """Converge after a kill mid-apply: revert half-started instances, then redo."""
        for intent in self.state.intents():
            log.warning("apply of %s@%s was interrupted at step %r; reverting and re-applying",
                        intent.model, intent.revision, intent.step,
                        extra={"model": intent.model, "revision": intent.revision})
            await self.executor.revert_interrupted(intent.model, self.state.applied(intent.model))
            self.state.clear_intent(intent.model)
            self._handled.pop(intent.model, None)
            for row in self.state.history(intent.model, limit=5):
                if row["revision"] == intent.revision and row["outcome"] == "pending":
                    self.state.finish(row["id"], "superseded", "interrupted; re-applied on restart")

    async def drain(self, grace: float) -> None:
        """Stop taking work; let workers finish within `grace` seconds, then cancel them."""
        workers = [t for t in self._workers.values() if not t.done()]
        if workers:
            log.info("waiting up to %gs for %d apply(s) in flight", grace, len(workers))
            _, still = await asyncio.wait(workers, timeout=grace)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        for bg in list(self._background):
            bg.cancel()

    async def idle(self) -> None:
        """Wait until no key has pending work (for `once` and tests)."""
        while True:
            workers = [t for t in self._workers.values() if not t.done()]
            if not workers and not self._pending:
                return
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.sleep(0)

    # -- Sink (thread-safe, non-blocking) ---------------------------------------
    def changed(self, change: Change) -> None:
        self._call(self._enqueue, change)

    def snapshot(self, changes: Mapping[str, Change]) -> None:
        self._call(self._on_snapshot, dict(changes))

    def connectivity(self, up: bool, detail: str = "") -> None:
        self._call(self._on_connectivity, up, detail)

    def _call(self, fn: object, *args: object) -> None:
        assert self._loop is not None, "bind() first"
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)  # type: ignore[operator]
        else:
            self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    # -- on the loop -----------------------------------------------------------
    def _on_connectivity(self, up: bool, detail: str) -> None:
        if up == self._source_up:
            return
        was = self._source_up
        self._source_up = up
        self.state.set_source(up, detail or ("connected" if up else "unreachable"))
        if up:
            if was is False:
                log.info("config center reachable again (%s)", detail or self.source_name)
            self.bus.emit(Event(Kind.SOURCE_UP, reason=detail))
        else:
            log.warning("config center unreachable: %s; the last good state keeps serving",
                        detail, extra={"reason": detail})
            self.bus.emit(Event(Kind.SOURCE_DOWN, reason=detail))
            if self._first_snapshot_keys is None and not self._reconciled:
                self._mark_reconciled()

    def _on_snapshot(self, changes: dict[str, Change]) -> None:
        self._on_connectivity(True, "snapshot")
        known = set(self.state.all_applied()) | {
            m for m, rev in self._handled.items() if rev != DELETED
        }
        for key in sorted(known - set(changes)):
            if key not in self._pending:
                changes[key] = Change(key, DELETED, None)
        if self._first_snapshot_keys is None:
            self._first_snapshot_keys = set()
            for change in changes.values():
                if self._enqueue(change):
                    self._first_snapshot_keys.add(change.key)
            if not self._first_snapshot_keys:
                self._mark_reconciled()
        else:
            for change in changes.values():
                self._enqueue(change)

    def _enqueue(self, change: Change) -> bool:
        """Record the latest change of its key; False when it was dropped as already handled."""
        if self._handled.get(change.key) == change.revision:
            return False
        if change.deleted and self._handled.get(change.key) in (None, DELETED) \
                and self.state.applied(change.key) is None:
            return False
        self._pending[change.key] = change
        q = self._quiet.setdefault(
            change.key, Quiescence(self.settings.reconcile.wait_min, self.settings.reconcile.wait_max)
        )
        q.tick()
        self._wake.setdefault(change.key, asyncio.Event()).set()
        worker = self._workers.get(change.key)
        if worker is None or worker.done():
            self._workers[change.key] = asyncio.get_running_loop().create_task(
                self._worker(change.key), name=f"reconcile:{change.key}"
            )
        return True

    async def _worker(self, key: str) -> None:
        wake = self._wake[key]
        quiet = self._quiet[key]
        try:
            while key in self._pending:
                wake.clear()
                delay = 0.0 if self.immediate else quiet.remaining()
                if delay > 0:
                    try:
                        await asyncio.wait_for(wake.wait(), delay)
                        continue  # another tick re-armed the window
                    except TimeoutError:
                        pass
                async with self._slots:
                    change = self._pending.pop(key)  # the latest, taken only once a slot is free
                    quiet.reset()
                    async with self._lock(key):
                        await self._process(change)
        finally:
            if self._first_snapshot_keys is not None and not self._reconciled:
                self._first_snapshot_keys.discard(key)
                if not self._first_snapshot_keys:
                    self._mark_reconciled()

    def _mark_reconciled(self) -> None:
        if not self._reconciled:
            self._reconciled = True
            self.bus.emit(Event(Kind.RECONCILED))

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # -- the pipeline ------------------------------------------------------------
    async def _process(self, change: Change) -> None:
        key = change.key
        if change.deleted:
            await self._deleted(change)
            return
        tracer = get_tracer()
        with tracer.span("revision", model=key, revision=change.revision):
            trace_id = tracer.trace_id()
            row = self.state.record_seen(key, change.revision, source=self.source_name,
                                         trace_id=trace_id)
            self._handled[key] = change.revision
            ctx = {"model": key, "revision": change.revision, "trace_id": trace_id}
            self.bus.emit(Event(Kind.SEEN, key, change.revision, trace_id=trace_id))
            started = time.monotonic()
            with tracer.span("fetch", source=self.source_name):
                # The source handed over the content; this takes it with the applied state.
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
                with tracer.span("verify"):
                    await self.executor.verify(spec)
            except RejectedError as exc:
                self._reject(row, key, change.revision, exc, trace_id)
                return
            await self._apply(row, spec, previous, change.revision, started, ctx, by="source",
                              observed_at=change.observed_at)

    async def _apply(self, row: int, spec: ModelSpec, previous: ModelSpec | None, revision: str,
                     started: float, ctx: dict[str, str | None], *, by: str,
                     success_outcome: str = "applied", observed_at: float | None = None) -> Outcome:
        key = spec.name
        tracer = get_tracer()
        trace_id = ctx.get("trace_id")
        with tracer.span("plan"):
            plan = make_plan(previous, spec, hot_paths=self.executor.hot_paths,
                             can_restart=self.executor.can_restart)
        if plan.kind == "noop":
            with tracer.span("commit"):
                self.state.commit(row, key, revision, spec.version, spec.canonical(),
                                  outcome="noop", plan=str(plan), stable=True)
            log.info("%s@%s: nothing to change on the server (%s)", key, revision, plan.reason,
                     extra=ctx)
            self.bus.emit(Event(Kind.NOOP, key, revision, spec.version, plan=str(plan),
                                trace_id=trace_id, fields={"by": by}))
            return self._done(key, revision, "noop")
        self.state.write_intent(key, revision, spec.canonical(),
                                previous.canonical() if previous else None, plan.kind)
        log.info("%s@%s: applying %s version %s", key, revision, plan, spec.version, extra=ctx)
        self.bus.emit(Event(Kind.APPLYING, key, revision, spec.version, plan=str(plan),
                            trace_id=trace_id))
        try:
            used = await self.executor.execute(plan, spec, previous, revision)
        except ApplyError as exc:
            reason = exc.reason
            self.state.finish(row, "failed", reason, plan=str(plan))
            self.state.clear_intent(key)
            log.error("%s@%s: apply failed: %s; the last good state keeps serving", key, revision,
                      reason, extra={**ctx, "reason": reason})
            self.bus.emit(Event(Kind.FAILED, key, revision, spec.version, reason=reason,
                                plan=str(plan), duration=time.monotonic() - started,
                                trace_id=trace_id, fields={"by": by, "error": type(exc).__name__}))
            if getattr(exc, "rolled_back", False) and previous is not None:
                self.bus.emit(Event(Kind.ROLLED_BACK, key, revision, previous.version,
                                    reason=f"back to {previous.version} after: {reason}",
                                    trace_id=trace_id, fields={"by": "daemon"}))
            return self._done(key, revision, "failed", reason)
        with tracer.span("commit"):
            self.state.commit(row, key, revision, spec.version, spec.canonical(),
                              outcome=success_outcome, plan=f"{used} ({plan.reason})", stable=True)
        duration = time.monotonic() - started
        log.info("%s@%s: applied version %s by %s in %.2fs", key, revision, spec.version, used,
                 duration, extra=ctx)
        fields: dict[str, object] = {"by": by}
        if observed_at is not None:
            fields["observed_at"] = observed_at
        self.bus.emit(Event(Kind.APPLIED, key, revision, spec.version, plan=f"{used} ({plan.reason})",
                            duration=duration, trace_id=trace_id, fields=fields))
        return self._done(key, revision, success_outcome)

    def _reject(self, row: int, key: str, revision: str, exc: RejectedError, trace_id: str | None) -> None:
        reason, outcome = exc.reason, exc.outcome  # "failed" when its weights could not be fetched
        self.state.finish(row, outcome, reason)
        log.error("%s@%s %s: %s; the running server is untouched", key, revision, outcome, reason,
                  extra={"model": key, "revision": revision, "reason": reason})
        self.bus.emit(Event(Kind.FAILED if outcome == "failed" else Kind.REJECTED, key, revision,
                            reason=reason, trace_id=trace_id, fields={"error": type(exc).__name__}))
        self._done(key, revision, outcome, reason)

    async def _deleted(self, change: Change) -> None:
        key = change.key
        row = self.state.record_seen(key, change.revision, source=self.source_name)
        self._handled[key] = DELETED
        if self.settings.reconcile.on_delete == "unload" and self.state.applied(key):
            try:
                await self.executor.remove(key)
            except WatcherError as exc:
                self.state.finish(row, "failed", f"document deleted; unload failed: {exc.reason}")
                self.bus.emit(Event(Kind.FAILED, key, change.revision, reason=exc.reason))
                return
            self.state.forget(key)
            reason = "document deleted; model unloaded"
        else:
            reason = "document deleted; the last applied spec keeps serving (on_delete=keep)"
        self.state.finish(row, "deleted", reason)
        log.warning("%s: %s", key, reason, extra={"model": key, "reason": reason})
        self.bus.emit(Event(Kind.DELETED, key, change.revision, reason=reason))
        self._done(key, change.revision, "deleted", reason)

    def _done(self, key: str, revision: str, outcome: str, reason: str = "") -> Outcome:
        out = Outcome(key, revision, outcome, reason)
        self.outcomes.append(out)
        del self.outcomes[:-1000]
        return out

    # -- operator actions ------------------------------------------------------
    async def rollback(self, model: str, to_revision: str | None = None, *,
                       by: str = "operator") -> Outcome:
        """Re-apply the last stable revision before the applied one (or `to_revision`).

        Downgrades are allowed here, and only here; verification still runs.
        """
        async with self._lock(model):
            with get_tracer().span("revision", model=model, revision=to_revision or "last-stable"):
                return await self._rollback_locked(model, to_revision, by)

    async def _rollback_locked(self, model: str, to_revision: str | None, by: str) -> Outcome:
        applied = self.state.applied(model)
        if to_revision is not None:
            target = self.state.find_revision(model, to_revision)
            if target is None:
                raise RejectedError(f"{model}: no applied revision {to_revision} in history")
        else:
            target = self.state.last_stable(
                model, before=applied.revision if applied else None
            )
            if target is None:
                raise RejectedError(f"{model}: no earlier stable revision to roll back to")
        spec = ModelSpec.model_validate(target["spec"])
        previous = ModelSpec.model_validate(applied.spec) if applied else None
        policy.check(spec, environment=self.settings.environment,
                     settings=self.settings.policy, applied=previous, rollback=True)
        await self.executor.verify(spec)
        from_row = self.state.last_seen(model)
        row = self.state.record_seen(model, target["revision"], source="rollback",
                                     version=spec.version, spec=spec.canonical())
        out = await self._apply(row, spec, previous, target["revision"], time.monotonic(),
                                {"model": model, "revision": target["revision"],
                                 "trace_id": get_tracer().trace_id()}, by=by)
        if out.outcome in ("applied", "noop"):
            if from_row is not None and from_row["id"] != row and applied is not None:
                self.state.finish(from_row["id"], "rolled_back",
                                  f"rolled back to {target['revision']} by {by}")
            self.bus.emit(Event(Kind.ROLLED_BACK, model, target["revision"], spec.version,
                                reason=f"rolled back from {applied.revision if applied else '-'}",
                                fields={"by": by}))
        return out

    async def restart(self, model: str, by: str = "operator") -> Outcome:
        """Restart the applied spec of `model` through the runtime (same revision)."""
        async with self._lock(model):
            applied = self.state.applied(model)
            if applied is None:
                raise RejectedError(f"{model}: nothing applied, nothing to restart")
            spec = ModelSpec.model_validate(applied.spec)
            try:
                await self.executor.restart(spec, applied.revision)
            except ApplyError as exc:
                log.error("%s: restart requested by %s failed: %s", model, by, exc.reason,
                          extra={"model": model, "reason": exc.reason})
                self.bus.emit(Event(Kind.FAILED, model, applied.revision, spec.version, reason=exc.reason,
                                    plan="restart", fields={"by": by, "error": type(exc).__name__}))
                return Outcome(model, applied.revision, "failed", exc.reason)
            if self.audit is not None:
                self.audit.write("restarted", model=model, revision=applied.revision, version=spec.version, by=by)
            log.info("%s: restarted at %s (requested by %s)", model, applied.revision, by, extra={"model": model})
            return Outcome(model, applied.revision, "applied", "restarted")

    def request_restart(self, model: str, by: str = "alertmanager") -> None:
        """Schedule `restart` from any thread (Alertmanager's self-healing)."""
        self._call(self._spawn_task, self.restart(model, by=by), f"restart:{model}")

    def _spawn_task(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(coro, name), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _logged(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        try:
            await coro
        except WatcherError as exc:
            log.error("%s refused: %s", name, exc.reason, extra={"reason": exc.reason})

    def request_resync(self, key: str | None = None) -> None:
        """Re-read one key (None: all) from the source now, e.g. after a webhook."""
        self._call(self._spawn_task, self._resync(key), f"resync:{key or '*'}")

    async def _resync(self, key: str | None) -> None:
        if self.source is None:
            return
        own = getattr(self.source, "request_resync", None)
        if callable(own):
            # The source re-reads inside its watch's order (etcd), so an older watch event
            # cannot arrive after the newer state this read would bring.
            own()
            return
        try:
            changes = await self.source.read_all()
        except WatcherError as exc:
            self._on_connectivity(False, exc.reason)
            return
        if key is None:
            self._on_snapshot(changes)
        elif key in changes:
            self._enqueue(changes[key])
        else:
            self._enqueue(Change(key, DELETED, None))

    def request_rollback(self, model: str, to_revision: str | None = None,
                         by: str = "operator") -> None:
        """Schedule a rollback from any thread (Alertmanager, requests table)."""
        self._call(self._spawn_task, self.rollback(model, to_revision, by=by), f"rollback:{model}")
