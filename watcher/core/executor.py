"""Executes a plan against the model server: hot swap, restart, health gate, roll back.

Owned by the pipeline; it only acts and raises. Contract of `execute`: on success the server
serves `spec` and has passed its health gate; on ApplyError the server serves the previous
spec again (or still), and the error says why (and `rolled_back=True` when the previous spec
had to be put back).

    hot      target.apply ▸ gate ▸ (unhealthy: put the previous spec back)
             a failed hot swap falls back to a restart where a runtime is configured
    restart  runtime.prepare ▸ start ▸ gate ▸ [beside an old one: router promotion along the
             step plan] ▸ stop the old ones
             failure beside an old one: traffic back on it, the new one stopped
             failure in place: the previous spec started again

The restart reports its progress (`progress(model, RestartStep)`), which the pipeline writes
into the intent, so a daemon killed mid-promotion can resume or revert (core/recovery.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

from watcher.core.errors import ApplyError, HealthGateError, RuntimeStartError, WatcherError
from watcher.core.gates import Gates
from watcher.core.health import GateResult, HealthCheck, Prober, gate
from watcher.core.plan import Plan
from watcher.core.promotion import promote, restore
from watcher.core.spec import ModelSpec
from watcher.fetchers.stage import stager_for
from watcher.observability.tracing import get_tracer
from watcher.routers.base import Router
from watcher.runtimes.base import Instance, Runtime
from watcher.settings import Settings
from watcher.targets.base import Target

log = logging.getLogger("watcher.core.executor")


@dataclass(frozen=True)
class RestartStep:
    """How far a restart got: `started` (the new instance runs), `routing` (at `percent`),
    `routed` (all traffic on the new one; the old ones are being stopped)."""

    phase: str
    new: str
    old: str | None = None
    percent: int = 0

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> RestartStep | None:
        """The step an intent records; None for a plain plan kind ("hot", "restart")."""
        if not text.startswith("{"):
            return None
        data = json.loads(text)
        return cls(str(data["phase"]), str(data["new"]), data.get("old"), int(data["percent"]))


def _rolled_back(exc: ApplyError) -> ApplyError:
    exc.rolled_back = True
    return exc


class Executor:
    def __init__(self, settings: Settings, target: Target | None, runtime: Runtime | None,
                 router: Router | None = None, *, prober: Prober | None = None,
                 gates: Gates | None = None) -> None:
        self.settings = settings
        #: RestartSlots (core/gates.py): held around every restart (a fleet-wide limit).
        self.gates = gates or Gates()
        self.target = target
        self.runtime = runtime
        self.router = router
        self._prober = prober
        self._http: httpx.AsyncClient | None = None  # created by the first health gate
        #: Remote weights: staged into the local cache by `verify`, served from it.
        self.weights = stager_for(settings)
        #: Told every gate verdict (the reconciler turns it into a HEALTH event).
        self.on_health: Callable[[ModelSpec, GateResult], None] | None = None
        #: Told how far a restart got (the pipeline records it in the intent).
        self.progress: Callable[[str, RestartStep], None] = lambda model, step: None

    @property
    def hot_paths(self) -> tuple[str, ...] | None:
        return self.target.hot_paths if self.target is not None else None

    @property
    def can_restart(self) -> bool:
        return self.runtime is not None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.weights.aclose()
        for plugin in (self.target, self.runtime, self.router):
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
        """The gate; HealthGateError with its reason when it does not pass."""
        check = self._check(spec)
        url = check.url_for(spec.name, instance.health_url if instance else None)
        if url is None:
            return  # no health URL configured: the apply's own success is the signal
        with get_tracer().span("health_gate"):
            if self._http is None and self._prober is None:
                self._http = httpx.AsyncClient()
            result = await gate(url, check, self._http, prober=self._prober)
        if self.on_health is not None:
            self.on_health(spec, result)
        if not result.ok:
            raise HealthGateError(result.reason)

    async def healthy(self, spec: ModelSpec, instance: Instance) -> str | None:
        """None when `instance` passes the gate, else the reason."""
        try:
            await self.health(spec, instance)
        except HealthGateError as exc:
            return exc.reason
        return None

    # -- execute ---------------------------------------------------------------
    async def execute(self, plan: Plan, spec: ModelSpec, previous: ModelSpec | None,
                      revision: str) -> str:
        """Apply `plan`; return how: "hot", "restart" or "restart [what runs]"."""
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
            # What now runs (a pinned image) goes into history and the audit trail.
            return f"restart [{new.artifact}]" if new.artifact else "restart"

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

    async def _restart(self, spec: ModelSpec, previous: ModelSpec | None,
                       revision: str) -> Instance:
        runtime = self.runtime
        assert runtime is not None
        await runtime.prepare(spec)
        async with self.gates.restarts.slot(spec.name, revision):  # start .. take over: unavailable
            new = await runtime.start(spec, revision)
            olds = [i for i in await runtime.instances(spec.name) if i.id != new.id]
            old = olds[0] if olds else None
            self.progress(spec.name, RestartStep("started", new.id, old.id if old else None))
            try:
                await self.health(spec, new)
                await self.take_over(spec, new, olds)
            except ApplyError as exc:
                await self._undo(spec, previous, new, old, exc)
                raise
        return new

    async def take_over(self, spec: ModelSpec, new: Instance, olds: list[Instance], *,
                        start_at: int = 0) -> None:
        """Move the traffic to `new` (steps above `start_at`), then stop the old ones."""
        old = olds[0] if olds else None
        if self.router is not None and new.address is not None:

            async def step(percent: int) -> None:
                self.progress(spec.name, RestartStep("routing", new.id, old.id if old else None,
                                                     percent))

            await promote(self.router, new, old, lambda i: self.healthy(spec, i), step,
                          start_at=start_at)
        self.progress(spec.name, RestartStep("routed", new.id, old.id if old else None, 100))
        assert self.runtime is not None
        for extra in olds:
            await self.runtime.stop(extra)

    async def _undo(self, spec: ModelSpec, previous: ModelSpec | None, new: Instance,
                    old: Instance | None, exc: ApplyError) -> None:
        runtime = self.runtime
        assert runtime is not None
        if old is not None:  # started beside it: the old one never stopped serving
            if self.router is not None:
                await restore(self.router, old)
            await runtime.stop(new)
            return
        if previous is None:
            return
        log.warning("%s: restart to %s failed (%s); restarting %s", spec.name, spec.version,
                    exc.reason, previous.version, extra={"model": spec.name})
        try:
            back = await runtime.start(previous, "rollback")
            await self.health(previous, back)
        except WatcherError as again:
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
        """The document was deleted (on_delete = "unload"): unload it / stop its instances."""
        if self.target is not None:
            await self.target.remove(name)
        elif self.runtime is not None:
            for inst in await self.runtime.instances(name):
                await self.runtime.stop(inst)
