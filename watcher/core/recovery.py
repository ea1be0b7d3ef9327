"""At start: converge after a kill mid-apply, and never replay a revision that kills us.

* An intent left behind means an apply was cut short: what it started is reverted (a new
  instance that never took over is discarded), its history row becomes `superseded`, and
  the source's current revision of that model is handled anew.
* A `pending` row without an intent means the daemon died after taking the revision up and
  before acting (while parsing or verifying it): `superseded` likewise.
* A revision whose handling was cut short MAX_INTERRUPTIONS times is recorded `failed` and
  counts as handled, so a document that crashes the daemon cannot keep it in a crash loop
  until systemd gives up: the other models go on, and an alert says which revision.
"""

from __future__ import annotations

import logging

from watcher.core.executor import Executor
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.core.recorder import Recorder
from watcher.core.state import State

log = logging.getLogger("watcher.core.recovery")

MAX_INTERRUPTIONS = 2


async def recover(state: State, executor: Executor, recorder: Recorder) -> None:
    for intent in state.intents():
        log.warning("apply of %s@%s was interrupted at step %r; reverting what it started",
                    intent.model, intent.revision, intent.step,
                    extra={"model": intent.model, "revision": intent.revision})
        await executor.revert_interrupted(intent.model, state.applied(intent.model))
        state.clear_intent(intent.model)
    for row in state.pending():
        model, revision = str(row["model"]), str(row["revision"])
        interrupted = state.interruptions(model, revision)
        if interrupted >= MAX_INTERRUPTIONS:
            outcome = Outcome(
                Verdict.FAILED, model, revision, f"the daemon stopped {interrupted + 1} times "
                "while handling this revision; it is not tried again (publish a new revision "
                "or roll back)", action=Action.RECOVER, by="daemon", error="CrashLoop")
        else:
            outcome = Outcome(
                Verdict.SUPERSEDED, model, revision, "interrupted by a stop of the daemon; "
                "the source's current revision is handled anew", action=Action.RECOVER,
                by="daemon")
        recorder.record(outcome, int(row["id"]))
