"""This daemon as a member of the fleet: its report, its soak probes, its part in an abort.

* **Report.** Built from the daemon's own state (applied revision, the newest handled one and
  its outcome) plus what only the running daemon knows (waiting for a cohort, applying,
  restarting, soak health), and put into the center whenever it changes (coalesced: the
  newest report wins, never an older one). `flush()` waits until it is there.
* **Soak probes.** While a rollout of a model is active and this member serves its revision,
  the model's health URL is probed every `probe_interval`; `failure_threshold` failures in
  a row report `failing` (an abort condition), and the last latency is the metric.
* **Abort.** A member that serves the revision of an aborted rollout asks the daemon for a
  rollback to its previous stable revision (core/actions.py, recorded as an Outcome `by
  rollout`), once per rollout; one that never took it refuses it (gates.py).
* **Status file.** `<state_dir>/fleet.json` for `model-watcher status` (waiting reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from watcher.core.events import Event, Kind, Message
from watcher.core.health import probe
from watcher.core.outcome import Action, Outcome
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.features import Operator
from watcher.fleet.backend import FleetBackend
from watcher.fleet.report import MemberReport, ModelReport
from watcher.fleet.settings import FleetSettings
from watcher.fleet.stats import STATS
from watcher.fleet.view import RolloutView
from watcher.settings import Settings

log = logging.getLogger("watcher.fleet.member")
STATUS_FILE = "fleet.json"
#: Nacos caps an instance's metadata at 1,024 characters (metadata key and JSON included)
NACOS_REPORT_LIMIT = 1000


class Member:
    def __init__(self, settings: Settings, fleet: FleetSettings, state: State,
                 backend: FleetBackend, view: RolloutView,
                 operator: Callable[[], Operator | None], report_limit: int | None = None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.state = state
        self.backend = backend
        self.view = view
        self.operator = operator
        self.limit = report_limit
        self.waiting: dict[str, str] = {}
        self._notes: dict[str, str] = {}  # model -> the waiting note the report carries
        self._busy: dict[str, str] = {}
        self.health: dict[str, tuple[str, str, str]] = {}  # model -> (health, note, latency)
        self._rolled_back: set[tuple[str, str]] = set()  # (model, rollout id) asked once
        self._dirty = asyncio.Event()
        self._written = 0
        self._wanted = 0
        self._flushed = asyncio.Condition()
        self._reported_latency: dict[str, float] = {}
        self._last_put = ""  # the last report put, without its time (puts are deduplicated)
        self._failing = False
        self.alive = False
        self.leading = False

    # -- what changes the report ------------------------------------------------------
    def on_message(self, message: Message) -> None:
        if isinstance(message, Outcome):
            self._busy.pop(message.model, None)
            if message.action is not Action.RESTART and message.action is not Action.ROLLBACK:
                self.waiting.pop(message.model, None)
                STATS.waiting.discard(message.model)
            self.check_aborts({message.model})
        elif message.kind is Kind.APPLYING and message.model:
            self._busy[message.model] = "applying"
        elif not (isinstance(message, Event) and message.kind is Kind.HEALTH):
            return
        self.changed()

    def set_waiting(self, model: str, reason: str | None, note: str = "") -> None:
        """This member's newest revision of `model` waits (`reason`, for `status`) or not
        (None). The report carries the short `note` only: it changes seldom, so a step of a
        rollout does not make every waiting member write its report again."""
        before = self._notes.get(model) if model in self.waiting else None
        if reason is None:
            self.waiting.pop(model, None)
            STATS.waiting.discard(model)
        else:
            self.waiting[model] = reason
            self._notes[model] = note
            STATS.waiting.add(model)
        if before != (None if reason is None else note):
            self.changed()

    def busy(self, model: str, state: str | None) -> None:
        if state is None:
            self._busy.pop(model, None)
        else:
            self._busy[model] = state
        (STATS.restarting.add if state == "restarting" else STATS.restarting.discard)(model)
        self.changed()

    def changed(self) -> None:
        self._wanted += 1
        self._dirty.set()

    async def flush(self) -> None:
        """Wait (at most a TTL) until the report as it is now is in the center."""
        wanted = self._wanted
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.fleet.ttl), self._flushed:
                await self._flushed.wait_for(lambda: self._written >= wanted)

    # -- building and writing it --------------------------------------------------------
    def build(self) -> MemberReport:
        models: dict[str, ModelReport] = {}
        for name in sorted(set(self.state.models()) | set(self.waiting)):
            applied = self.state.applied(name)
            last = self._last_handled(name)
            health, note, latency = self.health.get(name, ("", "", ""))
            state = self._busy.get(name) or ("waiting" if name in self.waiting else "serving")
            if name in self.waiting:
                note = "waiting: " + self._notes.get(name, "")
            elif last is not None and last[1] in ("failed", "rejected") and not note:
                note = last[2]
            models[name] = ModelReport(
                revision=applied.revision if applied else "", version=applied.version if applied else "",
                last=last[0] if last else "", outcome=last[1] if last else "", state=state,
                health=health, note=note, latency=latency)
        return MemberReport(self.fleet.member_id, dict(self.fleet.labels), models, time.time())

    def _last_handled(self, model: str) -> tuple[str, str, str] | None:
        """(revision, outcome, reason) of the newest revision the source delivered that
        this daemon finished handling (operator rollbacks and restarts are not)."""
        for row in self.state.history(model, 20):
            if row.get("source") != "rollback" and row["outcome"] not in ("pending", "superseded",
                                                                           "restarted"):
                return str(row["revision"]), str(row["outcome"]), str(row.get("reason") or "")
        return None

    async def run(self) -> None:
        """Put the report into the center whenever it changed (never raises)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            wanted = self._wanted
            try:
                report = self.build()
                self.write_status(report)
                same = replace(report, at=0.0).encode()
                if same != self._last_put:  # nothing new: no write, no event for the leader
                    await self.backend.report(report)
                    self._last_put = same
                self._failing = False
            except Exception as exc:  # the center is away: the next change or tick retries
                (log.debug if self._failing else log.warning)(
                    "fleet report not written: %s: %s", type(exc).__name__, exc)
                self._failing = True
                await asyncio.sleep(0.5)
                self._dirty.set()
                continue
            async with self._flushed:
                self._written = max(self._written, wanted)
                self._flushed.notify_all()

    async def tick(self) -> None:
        """Re-report now and then (a lost lease came back; the state changed by itself)."""
        while True:
            await asyncio.sleep(self.fleet.ttl)
            self.changed()

    def write_status(self, report: MemberReport | None) -> None:
        """`<state_dir>/fleet.json` for `status` (advisory: replaced atomically, no fsync)."""
        models: dict[str, Any] = {}
        names = report.models if report is not None else sorted(set(self.state.models()) | set(self.waiting))
        for name in names:
            stored = self.view.record(name)
            state = report.models[name].state if report is not None else \
                self._busy.get(name) or ("waiting" if name in self.waiting else "serving")
            entry: dict[str, Any] = {"waiting": self.waiting.get(name), "state": state}
            if stored is not None:
                r = stored.record
                entry["rollout"] = {"id": r.id, "phase": r.phase, "step": r.step + 1,
                                    "steps": len(r.policy.steps), "revision": r.revision,
                                    "version": r.version, "reason": r.reason}
            models[name] = entry
        data = {"member": self.fleet.member_id, "alive": self.alive, "leading": self.leading,
                "updated": time.time(), "models": models}
        path = self.settings.state_dir / STATUS_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("could not write %s: %s", path, exc)

    # -- abort: put the previous stable revision back ------------------------------------
    def check_aborts(self, models: set[str]) -> None:
        for model in models:
            stored = self.view.record(model)
            applied = self.state.applied(model)
            if stored is None or applied is None:
                continue
            r = stored.record
            if r.phase != "aborted" or not r.revision or applied.revision != r.revision:
                continue
            if (model, r.id) in self._rolled_back:
                continue
            operator = self.operator()
            if operator is None:
                continue  # starting: the next record or outcome asks again
            self._rolled_back.add((model, r.id))
            log.warning("%s: rollout %s aborted (%s); rolling back from %s", model, r.id,
                        r.reason, applied.revision, extra={"model": model, "reason": r.reason})
            operator.request_rollback(model, by="rollout")

    # -- soak probes ------------------------------------------------------------------------
    async def probes(self) -> None:
        async with httpx.AsyncClient() as client:
            failures: dict[str, int] = {}
            while True:
                for model in self._soaking():
                    await self._probe(client, model, failures)
                for model in set(self.health) - set(self._soaking()):
                    self.health.pop(model)
                    self.changed()
                await asyncio.sleep(self.fleet.probe_interval)

    def _soaking(self) -> list[str]:
        out = []
        for model, stored in self.view.records.items():
            applied = self.state.applied(model)
            r = stored.record
            if r.phase in ("progressing", "paused") and applied and applied.revision == r.revision:
                out.append(model)
        return out

    async def _probe(self, client: httpx.AsyncClient, model: str, failures: dict[str, int]) -> None:
        applied = self.state.applied(model)
        if applied is None:
            return
        check = self.settings.health.merged(ModelSpec.model_validate(applied.spec).health)
        url = check.url_for(model)
        if url is None:
            return
        started = time.perf_counter()
        reason = await probe(client, url, check)
        latency = f"{(time.perf_counter() - started) * 1000:.0f}"
        failures[model] = 0 if reason is None else failures.get(model, 0) + 1
        failing = failures[model] >= check.failure_threshold
        now = ("failing", reason or "", latency) if failing else ("ok", "", latency)
        if self.health.get(model, ("", "", ""))[:2] != now[:2] or self._moved(model, float(latency)):
            self._reported_latency[model] = float(latency)
            self.changed()
        self.health[model] = now

    def _moved(self, model: str, latency: float) -> bool:
        """The latency moved enough to be worth a report (a metric, not a heartbeat)."""
        before = self._reported_latency.get(model)
        return before is None or abs(latency - before) > max(20.0, 0.25 * before)
