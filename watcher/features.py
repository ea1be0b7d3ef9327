"""What the daemon hands its optional features: a typed context instead of the daemon itself.

A feature is a module with `async def serve(ctx: FeatureContext) -> None` that runs for as
long as the daemon (or until its settings section changes on SIGHUP): sd_notify, metrics, the
HTTP API, alerts, tracing. A feature that is not configured returns at once and costs
nothing, and its imports (prometheus_client, starlette, OpenTelemetry) happen only then.

Features see the daemon through two narrow seams: the `EventBus` (decisions, outcomes) and
the `Operator` (the few requests a feature may make: re-read, roll back, restart). Both are
safe to call from the event loop without blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from watcher.core.errors import WatcherError
from watcher.core.events import EventBus
from watcher.core.gates import Gates
from watcher.core.state import State
from watcher.observability.audit import AuditLog
from watcher.settings import Settings

if TYPE_CHECKING:
    from watcher.observability.metrics import Metrics


class Operator(Protocol):
    """Requests a feature may make of the daemon; each schedules work and returns at once."""

    def request_resync(self, model: str | None = None) -> None:
        """Re-read `model` (None: every document) from the config center now."""

    def request_rollback(self, model: str, to_revision: str | None = None, *,
                         by: str = "operator") -> None:
        """Put the last stable revision (or `to_revision`) of `model` back."""

    def request_restart(self, model: str, *, by: str = "operator") -> None:
        """Restart the applied spec of `model` through the runtime."""


@dataclass
class FeatureContext:
    """Everything a feature may use. `settings` is the set the feature was started with."""

    settings: Settings
    bus: EventBus
    state: State
    audit: AuditLog
    #: The daemon's operator once it can act; None while it is starting (answer 503).
    operator: Callable[[], Operator | None]
    #: True once the first full reconcile after start is done (READY).
    ready: Callable[[], bool] = field(default=lambda: False)
    #: Admission and restart slots (core/gates.py): a feature may install its own.
    gates: Gates = field(default_factory=Gates)

    @functools.cached_property
    def metrics(self) -> Metrics:
        """The daemon's one metrics registry, created (and prometheus_client imported) on
        first use, shared by every feature of this context."""
        from watcher.observability.metrics import Metrics

        return Metrics()



#: Feature modules, the settings sections each reads at start (a SIGHUP that changes one
#: restarts that feature with the new settings) and whether it runs at all. A feature that
#: does not run is never imported: its libraries (prometheus_client, the HTTP server,
#: OpenTelemetry, the fleet's backends) cost no memory on a host that does not use it. The
#: fleet runs whenever a `[fleet]` section exists: an invalid one holds every new revision
#: back with the reason (a member must not silently leave its fleet's rollouts).
FEATURES: dict[str, tuple[tuple[str, ...], Callable[[Settings], bool]]] = {
    "watcher.observability.sd_notify": ((), lambda s: bool(os.environ.get("NOTIFY_SOCKET"))),
    "watcher.observability.metrics": (("api",), lambda s: s.api.enabled),
    "watcher.api.server": (("api", "webhook", "state_dir"), lambda s: s.api.enabled),
    "watcher.alerts": (("alerts",), lambda s: bool(s.alerts.get("rules"))),
    "watcher.observability.tracing_otel": (("tracing",), lambda s: bool(s.tracing.get("enabled"))),
    "watcher.fleet.feature": (("fleet", "source", "health"), lambda s: bool(s.fleet)),
}


def enabled_features(settings: Settings) -> list[str]:
    return [name for name, (_, on) in FEATURES.items() if on(settings)]


def changed_features(old: Settings, new: Settings) -> list[str]:
    """The features whose settings sections differ between `old` and `new`."""
    return [name for name, (sections, on) in FEATURES.items()
            if on(old) != on(new) or any(getattr(old, s) != getattr(new, s) for s in sections)]


def preload_features(settings: Settings) -> None:
    """Import the enabled features (and let one `preload(settings)` its libraries) before the
    start-up work: imported later, between that work's allocations, they fragment the heap
    (the API's server libraries: ~2 MiB of RSS). A module that cannot be imported is left to
    `run_feature`, which says so."""
    for name in enabled_features(settings):
        with contextlib.suppress(ImportError):
            preload = getattr(importlib.import_module(name), "preload", None)
            if preload is not None:
                preload(settings)


async def run_feature(module_name: str, ctx: FeatureContext) -> None:
    """Run one feature until cancelled. A feature whose module or extra is missing, whose
    settings are invalid, or that crashes, is logged; the daemon goes on without it."""
    log = logging.getLogger("watcher.features")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        log.warning("feature %s unavailable: %s is not installed", module_name, exc.name)
        return
    serve: Callable[[FeatureContext], Awaitable[None]] = module.serve
    try:
        await serve(ctx)
    except asyncio.CancelledError:
        raise
    except WatcherError as exc:
        log.error("%s: %s; the daemon goes on without it", module_name, exc.reason)
    except Exception:  # a broken feature must not take the reconciler down
        log.exception("feature %s crashed; the daemon goes on without it", module_name)
