"""Executes a plan against the model server: hot swap, restart, health gate, roll back.

Owned by the reconciler; it only acts and raises. Contract of `execute`: on success the
server serves `spec` and has passed its health gate; on ApplyError the server serves the
previous spec again (or still), and the error says why (and `rolled_back=True` when the
previous spec had to be put back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from watcher.core.admission import Gates
from watcher.core.errors import ApplyError, HealthGateError, RuntimeStartError, TargetError
from watcher.core.health import GateResult, HealthCheck, Prober, gate
from watcher.core.plan import Plan
from watcher.core.spec import ModelSpec
from watcher.core.state import Applied, Intent
from watcher.fetchers.stage import stager_for
from watcher.observability.tracing import get_tracer
from watcher.runtimes.base import Instance, Runtime
from watcher.settings import Settings
from watcher.targets.base import Target

log = logging.getLogger("watcher.core.executor")
#: Undoing an interrupted apply gets this long before it is given up (and logged).
ABANDON_TIMEOUT = 60.0


def _rolled_back(exc: ApplyError) -> ApplyError:
    exc.rolled_back = True
    return exc


class Executor:
    def __init__(self, settings: Settings, target: Target | None, runtime: Runtime | None, *,
                 prober: Prober | None = None, gates: Gates | None = None) -> None:
        self.settings = settings
        #: RestartSlots (core/admission.py): held around every restart (a fleet-wide limit).
        self.gates = gates or Gates()
        self.target = target
        self.runtime = runtime
        self._prober = prober
        self._http = httpx.AsyncClient()
        #: Remote weights: staged into the local cache by `verify`, served from it.
        self.weights = stager_for(settings)
        #: Told every gate verdict (the reconciler turns it into a HEALTH event).
        self.on_health: Callable[[ModelSpec, GateResult], None] | None = None

    @property
    def hot_paths(self) -> tuple[str, ...] | None:
        return self.target.hot_paths if self.target is not None else None

    @property
    def can_restart(self) -> bool:
        return self.runtime is not None

    async def aclose(self) -> None:
        await self._http.aclose()
        await self.weights.aclose()
        for plugin in (self.target, self.runtime):
            if plugin is not None:
                await plugin.aclose()

    async def verify(self, spec: ModelSpec) -> ModelSpec:
        """Signature and digest of the weights, remote ones fetched into the local cache.

        VerificationError (rejected) if bad, FetchError (failed) if they cannot be fetched;
        returns the spec the server is given (remote URIs -> cache paths). The document
        as published stays what is stored and diffed.
        """
        from watcher.core import verify

        await verify.verify_spec(spec, self.settings.trust, staged=self.weights.handles)
        with get_tracer().span("stage"):
            return await self.weights.stage(spec)

    # -- health ----------------------------------------------------------------
    def _check(self, spec: ModelSpec) -> HealthCheck:
        return self.settings.health.merged(spec.health)

    async def health(self, spec: ModelSpec, instance: Instance | None = None) -> None:
        check = self._check(spec)
        url = check.url_for(spec.name, instance.health_url if instance else None)
        if url is None:
            return  # no health URL configured: the apply's own success is the signal
        with get_tracer().span("health_gate"):
            result = await gate(url, check, self._http, prober=self._prober)
        if self.on_health is not None:
            self.on_health(spec, result)
        if not result.ok:
            raise HealthGateError(result.reason)

    # -- execute ---------------------------------------------------------------
    async def execute(self, plan: Plan, spec: ModelSpec, previous: ModelSpec | None,
                      revision: str) -> str:
        """Apply `plan`; return how it was applied: "hot", "restart" or "restart [pinned image]"."""
        spec, previous = self.weights.local(spec), previous and self.weights.local(previous)
        with get_tracer().span("apply", plan=plan.kind):
            if plan.kind == "hot" and self.target is not None:
                try:
                    await self._hot(spec, previous)
                    return "hot"
                except ApplyError as exc:
                    if not (self.runtime and self.settings.reconcile.fallback_to_restart):
                        raise
                    log.warning("%s: hot swap failed (%s); falling back to a restart", spec.name,
                                exc.reason, extra={"model": spec.name, "revision": revision})
            if self.runtime is None:
                raise RuntimeStartError(f"{plan} needs a restart, but no runtime is configured")
            new = await self._restart(spec, previous, revision)
            image = new.info.get("image")
            # The pinned image that now runs goes into history and the audit trail.
            return f"restart [{image}]" if image else "restart"

    async def _hot(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        assert self.target is not None
        await self.target.apply(spec, previous)
        try:
            await self.health(spec)
        except HealthGateError as exc:
            if previous is None:
                raise
            log.warning("%s: unhealthy after hot swap (%s); putting %s back", spec.name,
                        exc.reason, previous.version, extra={"model": spec.name})
            try:
                await self.target.apply(previous, spec)
                await self.health(previous)
            except ApplyError as again:
                raise HealthGateError(
                    f"{exc.reason}; putting {previous.version} back failed too: {again.reason}"
                ) from again
            raise _rolled_back(exc) from None

    async def _restart(self, spec: ModelSpec, previous: ModelSpec | None, revision: str) -> Instance:
        runtime = self.runtime
        assert runtime is not None
        before = await runtime.instances(spec.name)
        await runtime.prepare(spec)
        async with self.gates.restarts.slot(spec.name, revision):  # start .. promote: unavailable
            new = await runtime.start(spec, revision)
            old = [i for i in before if i.id != new.id]
            try:
                await self.health(spec, new)

                async def step_check(inst: Instance) -> str | None:
                    try:
                        await self.health(spec, inst)
                    except HealthGateError as exc:
                        return exc.reason
                    return None

                await runtime.promote(new, old[0] if old else None, step_check)
                for extra in old[1:]:
                    await runtime.discard(extra)
            except ApplyError as exc:
                await self._recover_restart(runtime, new, spec, previous, exc)
                raise
        return new

    async def _recover_restart(self, runtime: Runtime, new: Instance, spec: ModelSpec,
                               previous: ModelSpec | None, exc: ApplyError) -> None:
        if not new.in_place:
            await runtime.discard(new)  # the old instance never stopped serving
            return
        if previous is None:
            return
        log.warning("%s: restart to %s failed (%s); restarting %s", spec.name, spec.version,
                    exc.reason, previous.version, extra={"model": spec.name})
        try:
            back = await runtime.start(previous, "rollback")
            await self.health(previous, back)
        except (RuntimeStartError, HealthGateError, TargetError) as again:
            raise RuntimeStartError(
                f"{exc.reason}; restarting {previous.version} failed too: {again.reason}"
            ) from again
        _rolled_back(exc)

    async def restart(self, spec: ModelSpec, revision: str) -> None:
        """Replace the running instance with a fresh one of the same spec (Alertmanager)."""
        if self.runtime is None:
            raise RuntimeStartError("a restart was requested, but no runtime is configured")
        spec = self.weights.local(spec)
        with get_tracer().span("apply", plan="restart"):
            await self._restart(spec, spec, revision)

    async def remove(self, name: str) -> None:
        if self.target is not None:
            await self.target.remove(name)
        elif self.runtime is not None:
            for inst in await self.runtime.instances(name):
                await self.runtime.discard(inst)

    async def abandon(self, intent: Intent | None, applied: Applied | None) -> None:
        """Undo what an apply cut short (a defect, its deadline) had started, as its intent
        says, within ABANDON_TIMEOUT: discard a new instance that never took over, put the
        previous spec back after a hot swap or an in-place restart. Never raises: what it
        cannot undo is logged, and the failed revision's alert says the rest."""
        if intent is None:
            return
        try:
            async with asyncio.timeout(ABANDON_TIMEOUT):
                await self.revert_interrupted(intent.model, applied)
                if intent.previous is None:
                    return
                previous = ModelSpec.model_validate(intent.previous)
                if intent.step == "hot" and self.target is not None:
                    await self.target.apply(previous, ModelSpec.model_validate(intent.spec))
                elif intent.step == "restart" and self.runtime is not None:
                    running = await self.runtime.instances(intent.model)
                    if all(i.in_place for i in running):
                        await self.runtime.start(previous, applied.revision if applied else "rollback")
        except Exception as exc:
            log.error("%s: could not undo the interrupted apply of %s: %s: %s", intent.model,
                      intent.revision, type(exc).__name__, exc, extra={"model": intent.model})

    async def revert_interrupted(self, model: str, applied: Applied | None) -> None:
        """After a kill mid-apply: discard instances of a revision that never committed."""
        if self.runtime is None:
            return
        committed = applied.revision if applied is not None else None
        instances = [i for i in await self.runtime.instances(model) if not i.in_place]
        if not any(i.revision == committed for i in instances):
            return  # nothing committed runs: keep what serves; the re-apply converges
        for inst in instances:
            if inst.revision != committed:
                log.warning("%s: removing instance %s of uncommitted revision %s", model, inst.id,
                            inst.revision, extra={"model": model})
                await self.runtime.discard(inst)
