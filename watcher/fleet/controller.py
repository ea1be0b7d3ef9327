"""The one actor that advances rollouts: the daemon that won the election.

Every daemon campaigns (etcd: a leased put-if-absent key; Nacos: the first live member in
id order); the winner watches the members' reports and, on every change and every TICK,
runs `decide()` (decide.py) over each active record and writes what changed. Each write is
a compare-and-swap on the version it read, and on etcd also fenced by the leader key's
create_revision, so a stale leader (partitioned, or paused past its TTL) cannot write, and
an operator's `rollout pause|resume|promote|abort` (a CAS write too) is never overwritten:
the controller reads it back and decides again. Leadership ends with the member's liveness.

The leader also announces what it sees happen to a rollout (started, step, paused,
resumed, completed, aborted) as one ROLLOUT event on the bus (alerts, metrics) and one audit
line, once fleet-wide (the members record their own outcomes in their own history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from watcher.core.errors import SourceError
from watcher.fleet.backend import FleetBackend, Stored
from watcher.fleet.decide import decide
from watcher.fleet.record import RolloutRecord
from watcher.fleet.report import MemberReport
from watcher.fleet.view import RolloutView

log = logging.getLogger("watcher.fleet.controller")
TICK = 0.5

Announce = Callable[[RolloutRecord, str], None]


class Controller:
    def __init__(self, backend: FleetBackend, view: RolloutView, announce: Announce,
                 on_leading: Callable[[bool], None]) -> None:
        self.backend = backend
        self.view = view
        self.announce = announce
        self.on_leading = on_leading
        self.reports: dict[str, MemberReport] | None = None
        self._wake = asyncio.Event()
        self._seen: dict[str, tuple[str, str, int]] = {}

    def poke(self) -> None:
        """Something changed (a record): decide again soon."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.backend.campaign()
            log.info("fleet: %s leads the rollout controller", self.backend.member_id)
            self.on_leading(True)
            try:
                await self._lead()
            finally:
                self.on_leading(False)
                self.reports = None
            log.warning("fleet: %s no longer leads the rollout controller",
                        self.backend.member_id)

    async def _lead(self) -> None:
        watcher = asyncio.ensure_future(self._watch_members())
        self._seen = {m: _mark(s.record) for m, s in self.view.records.items()}
        try:
            while self.backend.leading() and not watcher.done():
                self._wake.clear()  # before deciding: what changes meanwhile wakes us again
                if self.reports is not None:
                    try:
                        await self.evaluate(time.time())
                    except SourceError as exc:
                        log.debug("fleet controller: %s; deciding again shortly", exc.reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_members(self) -> None:
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(SourceError),
                                           wait=wait_exponential_jitter(0.2, max=5.0)):
            with attempt:
                async for reports in self.backend.watch_members():
                    self.reports = reports
                    self._wake.set()

    async def evaluate(self, now: float) -> None:
        """One pass over every active record (and the announcements of what changed)."""
        reports = self.reports or {}
        for model, stored in list(self.view.records.items()):
            self._announce_changes(model, stored.record)
            if not stored.record.active:
                continue
            document = None
            if stored.record.phase == "pending":
                document = await self.backend.read_document(model)
            new = decide(stored.record, reports, now, document=document)
            if new is None:
                continue
            log.debug("fleet controller: %s: %s step %d -> %s step %d", model, stored.record.phase,
                      stored.record.step + 1, new.phase, new.step + 1)
            version = await self.backend.write_rollout(new, stored.version, fenced=True)
            if version is None:  # someone else wrote (an operator): read it, decide again
                fresh = await self.backend.read_rollout(model)
                if fresh is not None:
                    self.view.wrote(fresh)
                continue
            self.view.wrote(Stored(new, version))
            self._announce_changes(model, new)

    def _announce_changes(self, model: str, record: RolloutRecord) -> None:
        mark = _mark(record)
        before = self._seen.get(model)
        if before == mark:
            return
        self._seen[model] = mark
        phase: str | None = record.phase
        if before is None or before[0] != record.id:  # a rollout seen for the first time
            phase = "started" if record.phase == "progressing" else phase
        elif mark[1] == before[1]:
            phase = "step"
        elif record.phase == "progressing":
            phase = "resumed" if before[1] == "paused" else "started"
        if phase not in (None, "pending"):
            self.announce(record, str(phase))


def _mark(record: RolloutRecord) -> tuple[str, str, int]:
    return (record.id, record.phase, record.step)
