"""The two places where something outside the core (the fleet, watcher/fleet/) may hold the
daemon back, each a small Protocol with a no-op default, so the core depends on nothing
beyond them:

* `Admission.check(change)`, asked by the reconciler BEFORE a new revision is handed to the
  scheduler. `admit` hands it on; `wait` keeps it aside, unhandled (exactly once still holds:
  it is not marked handled, so a restart of the daemon asks again), until `Gates.recheck()`
  says the answer may have changed; `refuse` records it `rejected` with the reason (handled,
  never applied: an aborted rollout). Must answer at once, from what the admission already
  knows: it runs on the event loop inside the Sink.
* `RestartSlots.slot(model, revision)`, held by the executor around a restart-class apply
  (start, health gate, promote), so that at most N members of a fleet restart at once; it
  may refuse (ApplyError: the apply fails, nothing restarted), e.g. into a revision whose
  rollout was aborted while this member waited for its slot.

`Gates` is the daemon-lifetime holder of both. The daemon builds one and hands it to every
generation's reconciler and executor (they read it at each use) and to the features, so a
feature installs its implementations at any time and the running generation follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from watcher.sources.base import Change


@dataclass(frozen=True)
class Decision:
    """What to do with a new revision now: `admit`, `wait` (reason says until when, e.g.
    "waiting: step 2 of 5") or `refuse` (reason goes into history as `rejected`)."""

    verdict: Literal["admit", "wait", "refuse"]
    reason: str = ""


ADMIT = Decision("admit")


class Admission(Protocol):
    def check(self, change: Change) -> Decision:
        """Answer for `change` (never a deletion) at once, without I/O."""
        ...


class RestartSlots(Protocol):
    def slot(self, model: str, revision: str) -> AbstractAsyncContextManager[None]:
        """Held while `model` restarts into `revision`; waiting for it may take long (the
        apply's deadline bounds it). Raising ApplyError refuses the restart (the apply
        fails, the last good state keeps serving)."""
        ...


class AdmitAll:
    def check(self, change: Change) -> Decision:
        return ADMIT


class Unlimited:
    @contextlib.asynccontextmanager
    async def slot(self, model: str, revision: str) -> AsyncIterator[None]:
        yield


class Gates:
    """The installed Admission and RestartSlots (no-ops until a feature installs others) and
    the line back to the reconciler that keeps revisions waiting."""

    def __init__(self) -> None:
        self.admission: Admission = AdmitAll()
        self.restarts: RestartSlots = Unlimited()
        self._recheck: Callable[[], None] | None = None

    def bind(self, recheck: Callable[[], None] | None) -> None:
        """Set by the running reconciler (None when it stops)."""
        self._recheck = recheck

    def recheck(self) -> None:
        """The admission's answers may have changed: ask again for every waiting revision.
        Call on the event loop."""
        if self._recheck is not None:
            self._recheck()
