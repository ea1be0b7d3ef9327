"""The daemon: assembles source, executor and reconciler from settings and supervises them.

Shape (uvicorn's Server): startup → serve until a signal → shutdown. Signal handlers only
set events. SIGTERM/SIGINT: stop taking work, let the step in flight finish within
`reconcile.shutdown_grace`, then cancel (an interrupted apply leaves an intent record that
the next start converges from). SIGHUP: reload the settings file; an invalid file is logged
and the running settings stay. SIGUSR1: operator requests (rollback) queued in the state.

Optional features (sd_notify, metrics, HTTP API, alerts, tracing) are modules with
`async serve(ctx: FeatureContext)`, run for the daemon's lifetime; a module that is absent is
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from watcher import plugins
from watcher.core.errors import SettingsError, SourceUnavailable, WatcherError
from watcher.core.events import Event, EventBus, Kind
from watcher.core.executor import Executor
from watcher.core.reconciler import Reconciler
from watcher.core.state import State
from watcher.features import FeatureContext
from watcher.observability.audit import AuditLog
from watcher.settings import Settings, load_settings
from watcher.sources.base import Source

log = logging.getLogger("watcher.daemon")
FEATURES = ("watcher.observability.sd_notify", "watcher.observability.metrics", "watcher.api.server", "watcher.alerts",
            "watcher.observability.tracing_otel")
HEARTBEAT = 5.0


def build(settings: Settings, state: State, bus: EventBus,
          audit: AuditLog | None = None) -> tuple[Source, Executor, Reconciler]:
    """Create the configured plug-ins and a reconciler over them (no I/O yet)."""
    from watcher.core import verify

    verify.load_trusted_keys(settings.trust.trusted_keys)  # a bad key fails at start (exit 2)
    ctx = plugins.PluginContext(state_dir=settings.state_dir, environment=settings.environment)
    source: Source = plugins.create("source", settings.source.options(), ctx)
    target = plugins.create("target", settings.target.options(), ctx) if settings.target else None
    runtime = plugins.create("runtime", settings.runtime.options(), ctx) if settings.runtime else None
    executor = Executor(settings, target, runtime)
    reconciler = Reconciler(settings, state, bus, executor, source_name=settings.source.kind,
                            source=source, audit=audit)
    return source, executor, reconciler


class Daemon:
    def __init__(self, settings: Settings, config_path: str | Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.bus = EventBus()
        self.state = State(settings.state_dir / "state.db")
        self.audit = AuditLog(settings.state_dir / "audit.jsonl")
        self.bus.subscribe(self.audit.on_event)
        self.reconciler: Reconciler | None = None
        self._ready = False
        self.bus.subscribe(self._track_ready)
        self.features = FeatureContext(settings, self.bus, self.state, self.audit,
                                       operator=lambda: self.reconciler, ready=lambda: self._ready)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._requests = asyncio.Event()

    def _track_ready(self, event: Event) -> None:
        if event.kind is Kind.RECONCILED:
            self._ready = True

    # -- signals -----------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        handlers: dict[signal.Signals, Callable[[], None]] = {
            signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
            signal.SIGHUP: self.request_reload, signal.SIGUSR1: self._requests.set,
        }
        for sig, fn in handlers.items():
            loop.add_signal_handler(sig, fn)

    # -- main ------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        self.state.daemon_started(self.settings.source.kind)
        log.info("model-watcher starting: source=%s target=%s runtime=%s environment=%s",
                 self.settings.source.kind, self.settings.target.kind if self.settings.target else "-",
                 self.settings.runtime.kind if self.settings.runtime else "-",
                 self.settings.environment)
        self._preload_features()
        features = [asyncio.create_task(self._feature(name), name=name) for name in FEATURES]
        housekeeping = asyncio.create_task(self._housekeeping(), name="housekeeping")
        try:
            while not self._stop.is_set():
                await self._generation()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    self._reload_settings()
        finally:
            self.bus.emit(Event(Kind.STOPPING))
            for task in (*features, housekeeping):
                task.cancel()
            await asyncio.gather(*features, housekeeping, return_exceptions=True)
            self.state.daemon_stopped()
            log.info("model-watcher stopped")
        return 0

    def _preload_features(self) -> None:
        """Let enabled features import their libraries now, before start-up work: imported
        later, between its allocations, they fragment the heap (the API: ~2 MiB RSS)."""
        for name in FEATURES:
            with contextlib.suppress(ImportError):
                preload = getattr(importlib.import_module(name), "preload", None)
                if preload is not None:
                    preload(self.settings)

    async def _feature(self, module_name: str) -> None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return
            log.warning("feature %s unavailable: %s is not installed", module_name, exc.name)
            return
        serve: Callable[[FeatureContext], Awaitable[None]] = module.serve
        try:
            await serve(self.features)
        except asyncio.CancelledError:
            raise
        except SettingsError as exc:
            log.error("%s: %s", module_name, exc.reason)
        except Exception:  # a broken feature must not take the reconciler down
            log.exception("feature %s crashed; the daemon goes on without it", module_name)

    def _reload_settings(self) -> None:
        self.bus.emit(Event(Kind.RELOADING))
        try:
            new = load_settings(self.config_path)
        except SettingsError as exc:
            log.error("SIGHUP: settings not reloaded, keeping the running ones: %s", exc.reason)
            return
        if new.state_dir != self.settings.state_dir:
            log.error("SIGHUP: state_dir cannot change while running; keeping %s",
                      self.settings.state_dir)
            new = new.model_copy(update={"state_dir": self.settings.state_dir})
        self.settings = new
        log.info("SIGHUP: settings reloaded from %s", self.config_path or "defaults")

    async def _generation(self) -> None:
        """Run source + reconciler with the current settings until stop or reload."""
        try:
            source, executor, reconciler = build(self.settings, self.state, self.bus, self.audit)
        except WatcherError as exc:
            log.error("cannot start: %s", exc.reason)
            self._stop.set()
            raise
        self.reconciler = reconciler
        reconciler.bind(asyncio.get_running_loop())
        await reconciler.recover()
        watcher = asyncio.create_task(self._watch(source, reconciler), name="source")
        stop = asyncio.create_task(self._stop.wait())
        reload = asyncio.create_task(self._reload.wait())
        requests = asyncio.create_task(self._serve_requests(reconciler))
        try:
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stop, reload, requests, watcher):
                t.cancel()
            await asyncio.gather(stop, reload, requests, watcher, return_exceptions=True)
            await reconciler.drain(self.settings.reconcile.shutdown_grace)
            with contextlib.suppress(Exception):
                await source.aclose()
            with contextlib.suppress(Exception):
                await executor.aclose()

    async def _watch(self, source: Source, reconciler: Reconciler) -> None:
        """Keep the source's watch running; a crash of it is logged and the watch restarted."""
        delay = 1.0
        while True:
            try:
                await source.watch(reconciler)
                return
            except asyncio.CancelledError:
                raise
            except SourceUnavailable as exc:
                reconciler.connectivity(False, exc.reason)
            except Exception as exc:
                log.exception("source %s failed; restarting its watch in %.0fs", source.name, delay)
                reconciler.connectivity(False, f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _serve_requests(self, reconciler: Reconciler) -> None:
        while True:
            for req in self.state.pending_requests():
                try:
                    if req["action"] != "rollback":
                        raise WatcherError(f"unknown request {req['action']!r}")
                    out = await reconciler.rollback(req["model"], req["argument"],
                                                    by=req["requested_by"])
                    ok = out.outcome in ("applied", "noop")
                    self.state.finish_request(req["id"], ok, f"{out.outcome}: {out.reason}".rstrip(": "))
                except WatcherError as exc:
                    self.state.finish_request(req["id"], False, exc.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._requests.wait(), HEARTBEAT)
            self._requests.clear()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            self.state.heartbeat()
