"""Settings -> the parts that act: source, target, runtime, router, executor, reconciler.

Building does no I/O and validates every plug-in's options, so the daemon can build the
parts of new settings (SIGHUP) before it lets go of the running ones, and `once`, `rollback`
and the daemon all act through the very same parts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from watcher import plugins
from watcher.core.events import EventBus
from watcher.core.executor import Executor
from watcher.core.gates import Gates
from watcher.core.reconciler import Reconciler
from watcher.core.state import State
from watcher.routers.base import Router
from watcher.runtimes.base import Runtime
from watcher.settings import Settings
from watcher.sources.base import Source
from watcher.targets.base import Target


@dataclass
class Parts:
    source: Source
    executor: Executor
    reconciler: Reconciler

    async def aclose(self) -> None:
        """Close the source and the executor's plug-ins (errors are not worth a traceback
        at this point: they are shut down either way)."""
        with contextlib.suppress(Exception):
            await self.source.aclose()
        with contextlib.suppress(Exception):
            await self.executor.aclose()


def build(settings: Settings, state: State, bus: EventBus, gates: Gates | None = None) -> Parts:
    """Create the configured plug-ins and a reconciler over them. Raises WatcherError
    (SettingsError, PluginError) naming the field when anything is wrong. `gates` (the
    daemon's, which features may fill) default to no-ops."""
    from watcher.core import verify

    verify.load_trusted_keys(settings.trust.trusted_keys)  # a bad key fails at start (exit 2)
    ctx = plugins.PluginContext(state_dir=settings.state_dir, environment=settings.environment,
                                env_policy=settings.policy.env)
    source = plugins.create("source", settings.source.options(), ctx)
    if not isinstance(source, Source):
        raise plugins.contract_error("source", source, Source)
    target = plugins.create("target", settings.target.options(), ctx) if settings.target else None
    if target is not None and not isinstance(target, Target):
        raise plugins.contract_error("target", target, Target)
    runtime = (plugins.create("runtime", settings.runtime.options(), ctx)
               if settings.runtime else None)
    if runtime is not None and not isinstance(runtime, Runtime):
        raise plugins.contract_error("runtime", runtime, Runtime)
    router = plugins.create("router", settings.router.options(), ctx) if settings.router else None
    if router is not None and not isinstance(router, Router):
        raise plugins.contract_error("router", router, Router)
    executor = Executor(settings, target, runtime, router, gates=gates)
    reconciler = Reconciler(settings, state, bus, executor, source_name=settings.source.kind,
                            gates=gates)
    return Parts(source, executor, reconciler)
