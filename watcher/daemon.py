"""The daemon: one process per state directory, running generations of source + reconciler.

Shape (uvicorn's Server): startup → serve until a signal → shutdown. Signal handlers only
set events. SIGTERM/SIGINT: stop taking work, let the step in flight finish within
`reconcile.shutdown_grace`, then cancel (an interrupted apply leaves an intent record the
next start converges from). SIGHUP: read the settings file and build its parts; only when
that succeeds do the running parts make way (an invalid file, or a typo in a plug-in's
options, is logged and the running settings stay), and features whose sections changed are
restarted with the new settings. SIGUSR1: operator requests queued in the state (rollback).

Every task has a parent (core/tasks.py). The source session and the request loop never end
by contract; if one does, the generation is rebuilt. Housekeeping (heartbeat, history trim)
survives any error of the state database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from watcher.assembly import Parts, build
from watcher.core.errors import WatcherError
from watcher.core.events import Event, EventBus, Kind, Message
from watcher.core.gates import Gates
from watcher.core.reconciler import Reconciler
from watcher.core.state import State
from watcher.core.statelock import StateLock
from watcher.core.tasks import TaskSet
from watcher.features import (
    FeatureContext,
    changed_features,
    enabled_features,
    preload_features,
    run_feature,
)
from watcher.observability.audit import AuditLog
from watcher.settings import Settings, load_settings
from watcher.sources.session import SourceSession

log = logging.getLogger("watcher.daemon")
HEARTBEAT = 5.0
TRIM_EVERY = 3600.0
#: Exit status when another process already acts on the state directory.
EXIT_LOCKED = 3


class Daemon:
    def __init__(self, settings: Settings, config_path: str | Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.bus = EventBus()
        self.state = State(settings.state_dir / "state.db")
        self.audit = AuditLog(settings.state_dir / "audit.jsonl")
        self.bus.subscribe(self.audit.on_message)
        self.reconciler: Reconciler | None = None
        self._ready = False
        self.bus.subscribe(self._track_ready)
        #: Admission and restart slots every generation consults; features may install them.
        self.gates = Gates()
        self.features = FeatureContext(settings, self.bus, self.state, self.audit,
                                       operator=lambda: self.reconciler, ready=lambda: self._ready,
                                       gates=self.gates)
        self._feature_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskSet("daemon")
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._requests = asyncio.Event()

    def _track_ready(self, message: Message) -> None:
        if isinstance(message, Event) and message.kind is Kind.RECONCILED:
            self._ready = True
            with contextlib.suppress(Exception):  # status shows it; the daemon needs it not
                self.state.set_ready()

    # -- signals -----------------------------------------------------------------------
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

    # -- main ----------------------------------------------------------------------------
    async def run(self) -> int:
        lock = StateLock(self.settings.state_dir)
        if not lock.acquire():
            log.error("another model-watcher (pid %s) already acts on %s; not starting",
                      lock.holder() or "?", self.settings.state_dir)
            return EXIT_LOCKED
        try:
            parts = build(self.settings, self.state, self.bus, self.gates)  # bad settings: exit 2
        except WatcherError:
            lock.release()
            raise
        self._install_signals(asyncio.get_running_loop())
        self.state.daemon_started(self.settings.source.kind)
        log.info("model-watcher starting: source=%s target=%s runtime=%s environment=%s",
                 self.settings.source.kind, self.settings.target.kind if self.settings.target else "-",
                 self.settings.runtime.kind if self.settings.runtime else "-",
                 self.settings.environment)
        preload_features(self.settings)
        for name in enabled_features(self.settings):
            self._start_feature(name)
        self._tasks.spawn(self._housekeeping(), "housekeeping")
        try:
            while not self._stop.is_set():
                await self._generation(parts)
                parts = self._next_parts(parts)
        finally:
            self.bus.emit(Event(Kind.STOPPING))
            await self._tasks.cancel_all()
            with contextlib.suppress(Exception):
                self.state.daemon_stopped()
            self.audit.close()
            lock.release()
            log.info("model-watcher stopped")
        return 0

    def _start_feature(self, name: str) -> None:
        self._feature_tasks[name] = self._tasks.spawn(run_feature(name, self.features), name)

    def _next_parts(self, running: Parts) -> Parts:
        """After a generation: the parts of reloaded settings, or new parts of the same."""
        if self._stop.is_set():
            return running
        if self._reload.is_set():
            self._reload.clear()
            self.bus.emit(Event(Kind.RELOADING))
            reloaded = self._reload_settings()
            if reloaded is not None:
                return reloaded
        return build(self.settings, self.state, self.bus, self.gates)

    def _reload_settings(self) -> Parts | None:
        """Parts of the re-read settings file, or None (logged) to keep the running ones."""
        try:
            new = load_settings(self.config_path)
            if new.state_dir != self.settings.state_dir:
                log.error("SIGHUP: state_dir cannot change while running; keeping %s",
                          self.settings.state_dir)
                new = new.model_copy(update={"state_dir": self.settings.state_dir})
            parts = build(new, self.state, self.bus, self.gates)
        except WatcherError as exc:
            log.error("SIGHUP: settings not reloaded, keeping the running ones: %s", exc.reason)
            self.bus.emit(Event(Kind.RELOADING, reason=exc.reason))  # says so in STATUS=
            return None
        restart = changed_features(self.settings, new)
        self.settings = self.features.settings = new
        for name in restart:
            task = self._feature_tasks.pop(name, None)
            if task is not None:
                task.cancel()
            if name in enabled_features(new):
                self._start_feature(name)
        log.info("SIGHUP: settings reloaded from %s%s", self.config_path or "defaults",
                 f"; restarted {', '.join(restart)}" if restart else "")
        return parts

    async def _generation(self, parts: Parts) -> None:
        """Run source + reconciler until stop or reload (or a task that must not end did)."""
        reconciler = parts.reconciler
        try:
            await reconciler.start()
            self.reconciler = reconciler
            session = SourceSession(parts.source, reconciler)
            reconciler.resync = session.request_resync
            tasks = TaskSet("generation")
            essential = {tasks.spawn(session.run(), "source"),
                         tasks.spawn(self._serve_requests(reconciler), "requests")}
            signals = {asyncio.ensure_future(self._stop.wait()),
                       asyncio.ensure_future(self._reload.wait())}
            try:
                done, _ = await asyncio.wait(essential | signals, return_when=asyncio.FIRST_COMPLETED)
                if done & essential:  # already logged by the TaskSet; rebuild after a pause
                    log.error("a task of the daemon ended unexpectedly; restarting source and "
                              "reconciler")
                    await asyncio.sleep(1.0)
            finally:
                for waiter in signals:
                    waiter.cancel()
                await tasks.cancel_all()
                await reconciler.drain(self.settings.reconcile.shutdown_grace)
        finally:
            self.reconciler = None
            await parts.aclose()

    async def _serve_requests(self, reconciler: Reconciler) -> None:
        """Operator requests queued by the CLI (rollback), on SIGUSR1 or every HEARTBEAT."""
        while True:
            try:
                for req in self.state.pending_requests():
                    await self._serve_request(reconciler, req)
            except Exception:
                log.exception("operator requests: the state database failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._requests.wait(), HEARTBEAT)
            self._requests.clear()

    async def _serve_request(self, reconciler: Reconciler, req: dict[str, object]) -> None:
        rid = int(str(req["id"]))
        try:
            if req["action"] != "rollback":
                raise WatcherError(f"unknown request {req['action']!r}")
            out = await reconciler.rollback(str(req["model"]),
                                            str(req["argument"]) if req["argument"] else None,
                                            by=str(req["requested_by"]))
            self.state.finish_request(rid, out.ok, f"{out.label}: {out.reason}".rstrip(": "))
        except WatcherError as exc:
            self.state.finish_request(rid, False, exc.reason)
        except Exception as exc:
            log.exception("operator request %d failed", rid)
            self.state.finish_request(rid, False, f"internal error: {type(exc).__name__}: {exc}")

    async def _housekeeping(self) -> None:
        trimmed_at = 0.0
        rc = self.settings.reconcile
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                self.state.heartbeat()
                if time.monotonic() - trimmed_at >= TRIM_EVERY:
                    trimmed_at = time.monotonic()
                    gone = self.state.trim(rc.history_limit, rc.history_stable)
                    if gone:
                        log.info("history: forgot %d old revision rows", gone)
            except Exception as exc:  # a full disk must not end the heartbeat for good
                log.error("housekeeping: the state database failed: %s: %s", type(exc).__name__, exc)

