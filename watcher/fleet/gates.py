"""The fleet's implementations of the core's two seams (core/gates.py).

`FleetAdmission.check(change)`, asked before a revision reaches the scheduler:

    no fleet view yet, or no fresh read of the
      model's record since the change was observed  wait (a read is asked for)
    a newer rollout replaced the one it waited for   wait (the newer document follows)
    no record, or a record of other content          admit (no rollout for this revision)
    record pending                                   wait: the controller has not started it
    record aborted                                   refuse: recorded `rejected`, never applied
    record completed                                 admit
    progressing / paused:
      outside the selector                           wait until it completes
      not yet counted by the controller              wait
      this member's cohort reached                   admit
      otherwise                                      wait: "waiting: step 2 of 5 (...)"

`FleetSlots.slot(model)`: the distributed restart semaphore of the center, with the
limit of the model's rollout (`max_unavailable`), else `[fleet] max_unavailable` (0: none);
the member reports `restarting` while it holds one, so the limit can be checked from the
members' own reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from watcher.core.errors import ApplyError, SourceUnavailable
from watcher.core.gates import ADMIT, Decision
from watcher.fleet.backend import FleetBackend
from watcher.fleet.settings import FleetSettings
from watcher.fleet.view import RolloutView
from watcher.sources.base import Change

log = logging.getLogger("watcher.fleet.gates")


def _wait(reason: str) -> Decision:
    return Decision("wait", reason)


class FleetAdmission:
    def __init__(self, fleet: FleetSettings, view: RolloutView,
                 on_decision: Callable[[str, Decision, str], None]) -> None:
        self.fleet = fleet
        self.view = view
        self._told = on_decision
        #: model -> sha256 of the content last held back by an active rollout
        self._held: dict[str, str] = {}

    def check(self, change: Change) -> Decision:
        decision, note = self._decide(change)
        self._told(change.key, decision, note)
        return decision

    def _decide(self, change: Change) -> tuple[Decision, str]:
        """The decision, and a short note for the member's report that does not change from
        one step to the next (so a step does not make every waiting member report again)."""
        model = change.key
        if not self.view.loaded:
            self.view.want(model)
            return _wait("waiting: joining the fleet (rollout records not read yet)"), "joining"
        if not self.view.fresh(model, change.observed_at):
            self.view.want(model)
            return _wait("waiting: reading the model's rollout record"), "reading the record"
        stored = self.view.record(model)
        sha = hashlib.sha256(change.content or b"").hexdigest()
        if stored is not None and stored.record.sha256 != sha and self._held.get(model) == sha:
            # a newer rollout replaced the one this revision waited for: its document is on
            # its way and will replace this one; never let the old one through meanwhile
            return _wait(f"waiting: superseded by rollout {stored.record.id}"), "superseded"
        if stored is None or stored.record.sha256 != sha:
            return ADMIT, ""
        r = stored.record
        self._held[model] = sha
        if r.phase == "aborted":
            return Decision("refuse", f"not applied: rollout {r.id} was aborted: {r.reason}"), ""
        if r.phase == "completed":
            return ADMIT, ""
        if r.phase == "pending":
            return _wait("waiting: rollout starting (the controller has not taken it up yet)"), \
                "rollout starting"
        paused = " (paused)" if r.phase == "paused" else ""
        if not r.covers(self.fleet.labels):
            return _wait(f"waiting: outside the rollout's selector; applies once it completes"
                         f" ({r.where()}{paused})"), "outside the selector"
        me = self.fleet.member_id
        if me not in r.members:
            return _wait(f"waiting: {r.where()}{paused}; not counted in the rollout yet"), \
                "not counted yet"
        joins = r.joins_at(me)
        if joins is not None and joins <= r.step:
            return ADMIT, ""
        at = f"; this member joins at step {joins + 1}" if joins is not None else ""
        return _wait(f"waiting: {r.where()}{paused}{at}"), \
            f"joins at step {joins + 1}" if joins is not None else "waiting"


class Busy(Protocol):
    """Where the member's per-model state goes (member.py)."""

    def busy(self, model: str, state: str | None) -> None: ...

    async def flush(self) -> None:
        """Return once the report as it is now is in the center (or could not be put)."""
        ...


class FleetSlots:
    def __init__(self, fleet: FleetSettings, view: RolloutView, backend: FleetBackend,
                 member: Busy) -> None:
        self.fleet = fleet
        self.view = view
        self.backend = backend
        self.member = member

    def limit(self, model: str) -> int:
        stored = self.view.record(model)
        if stored is not None:
            return stored.record.policy.max_unavailable
        return self.fleet.max_unavailable

    @contextlib.asynccontextmanager
    async def slot(self, model: str, revision: str) -> AsyncIterator[None]:
        limit = self.limit(model)
        if limit <= 0:
            yield
            return
        self.member.busy(model, "queued")  # waiting for a restart slot
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._take(stack, model, limit)
                self._refuse_if_aborted(model, revision)
                # The report says `restarting` from after the slot is taken until before it
                # is given back: the reports bracket the real restart, so they can never
                # show more restarting members than there are slots.
                self.member.busy(model, "restarting")
                await self.member.flush()
                try:
                    yield
                finally:
                    self.member.busy(model, "applying")
                    await self.member.flush()
        finally:
            self.member.busy(model, None)

    async def _take(self, stack: contextlib.AsyncExitStack, model: str, limit: int) -> None:
        """Take a slot; while the center is unreachable, wait for it as for a full set.

        The semaphore lives in the center, so an outage (a Nacos restart, an etcd election)
        is a reason to wait, not to fail the apply: a failed apply counts against the
        rollout's abort conditions and would abort it for the center's sake. The pipeline's
        deadline still bounds the whole apply."""
        def waiting(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if state.attempt_number == 1:
                log.info("%s: the config center is unreachable while taking a restart slot "
                         "(%s); waiting for it", model, getattr(exc, "reason", exc),
                         extra={"model": model})

        retrying = AsyncRetrying(retry=retry_if_exception_type(SourceUnavailable),
                                 wait=wait_exponential_jitter(multiplier=0.5, max=5.0),
                                 before_sleep=waiting, reraise=True)
        async for attempt in retrying:
            with attempt:
                await stack.enter_async_context(self.backend.slot(model, limit))

    def _refuse_if_aborted(self, model: str, revision: str) -> None:
        """A member that waited for its slot while the rollout was aborted must not restart
        into the aborted revision (the rollback after an abort restarts into another one)."""
        stored = self.view.record(model)
        if stored is not None and stored.record.phase == "aborted" and stored.record.revision == revision:
            raise ApplyError(f"not restarted: rollout {stored.record.id} was aborted while this "
                             f"member waited for a restart slot ({stored.record.reason})")
