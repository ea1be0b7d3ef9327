"""Converging after an apply was cut short: by a kill (at start), or by a defect or its
deadline (the pipeline's fault boundary). The intent says what the apply had started.

At start (`recover`):
* a restart killed mid-promotion (the intent records `routing`/`routed`) **resumes** when its
  new instance still runs and passes the gate: traffic moves on from the step reached, the
  old instance is stopped, and the revision is committed (action `recover`). When the gate
  does not pass it **reverts**: traffic back on the old instance, the new one stopped;
* any other intent is reverted (a new instance that never took over is removed), its row
  becomes `superseded`, and the source's current revision is handled anew;
* a `pending` row without an intent (killed while parsing or verifying) is `superseded` too;
* a revision whose handling was cut short MAX_INTERRUPTIONS times is recorded `failed` and
  counts as handled, so a document that crashes the daemon cannot keep it in a crash loop
  until systemd gives up: the other models go on, and an alert says which revision.

After a defect or a deadline (`abandon`): the same revert, plus the previous spec put back
after a hot swap or an in-place restart; never raises.
"""

from __future__ import annotations

import asyncio
import logging

from watcher.core.errors import WatcherError
from watcher.core.executor import Executor, RestartStep
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.core.promotion import restore
from watcher.core.recorder import Recorder
from watcher.core.spec import ModelSpec
from watcher.core.state import Applied, Intent, State
from watcher.runtimes.base import Instance

log = logging.getLogger("watcher.core.recovery")

MAX_INTERRUPTIONS = 2
#: Undoing an interrupted apply gets this long before it is given up (and logged).
ABANDON_TIMEOUT = 60.0


async def recover(state: State, executor: Executor, recorder: Recorder) -> None:
    for intent in state.intents():
        log.warning("apply of %s@%s was interrupted at step %s", intent.model, intent.revision,
                    intent.step, extra={"model": intent.model, "revision": intent.revision})
        applied = state.applied(intent.model)
        resumed = await _resume(executor, intent)
        if resumed is not None:
            row_id = next((int(r["id"]) for r in reversed(state.pending())
                           if r["model"] == intent.model and r["revision"] == intent.revision),
                          None)
            spec = ModelSpec.model_validate(intent.spec)
            recorder.record(Outcome(
                Verdict.APPLIED, intent.model, intent.revision, "resumed after a stop of the "
                "daemon", action=Action.RECOVER, by="daemon", version=spec.version,
                how=f"restart [{resumed.artifact}]" if resumed.artifact else "restart"),
                row_id, spec=spec, previous_revision=applied.revision if applied else None)
            continue
        await revert(executor, intent.model, applied)
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


async def _resume(executor: Executor, intent: Intent) -> Instance | None:
    """The new instance, now serving all traffic; None when there is nothing to resume
    (or the gate says revert, which is then done)."""
    step = RestartStep.decode(intent.step)
    runtime = executor.runtime
    if step is None or step.phase not in ("routing", "routed") or runtime is None:
        return None
    running = await runtime.instances(intent.model)
    new = next((i for i in running if i.id == step.new), None)
    if new is None:
        return None
    olds = [i for i in running if i.id != new.id]
    spec = ModelSpec.model_validate(intent.spec)
    reason = await executor.healthy(spec, new)
    try:
        if reason is not None:
            raise WatcherError(reason)
        # enter the recorded step again (it may not have been set, held and checked)
        start_at = 100 if step.phase == "routed" else max(
            (p for p in (executor.router.plan.steps if executor.router else []) if p < step.percent),
            default=0)
        await executor.take_over(spec, new, olds, start_at=start_at)
    except WatcherError as exc:
        log.warning("%s: not resuming %s (%s); reverting", intent.model, intent.revision,
                    exc.reason, extra={"model": intent.model})
        if olds and executor.router is not None:
            await restore(executor.router, olds[0])
        await runtime.stop(new)
        return None
    log.info("%s: resumed %s at %d%% after a stop of the daemon", intent.model,
             intent.revision, step.percent, extra={"model": intent.model})
    return new


async def revert(executor: Executor, model: str, applied: Applied | None) -> None:
    """Remove instances of a revision that never committed, if a committed one runs."""
    runtime = executor.runtime
    if runtime is None:
        return
    committed = applied.revision if applied is not None else None
    instances = await runtime.instances(model)
    if not any(i.revision == committed for i in instances):
        return  # nothing committed runs: keep what serves; the re-apply converges
    serving = next(i for i in instances if i.revision == committed)
    for inst in instances:
        if inst.revision != committed:
            log.warning("%s: removing instance %s of uncommitted revision %s", model,
                        inst.name or inst.id, inst.revision, extra={"model": model})
            if executor.router is not None and serving.address is not None:
                await restore(executor.router, serving)
            await runtime.stop(inst)


async def abandon(executor: Executor, intent: Intent | None, applied: Applied | None) -> None:
    """Undo what an apply cut short (a defect, its deadline) had started, within
    ABANDON_TIMEOUT: revert a new instance that never took over, put the previous spec back
    after a hot swap or an in-place restart. Never raises: what it cannot undo is logged,
    and the failed revision's alert says the rest."""
    if intent is None:
        return
    try:
        async with asyncio.timeout(ABANDON_TIMEOUT):
            await revert(executor, intent.model, applied)
            if intent.previous is None:
                return
            previous = ModelSpec.model_validate(intent.previous)
            step = RestartStep.decode(intent.step)
            if intent.step == "hot" and executor.target is not None:
                await executor.target.apply(previous, ModelSpec.model_validate(intent.spec))
            elif step is not None and step.old is None and executor.runtime is not None:
                await executor.runtime.start(previous, applied.revision if applied else "rollback")
    except Exception as exc:
        log.error("%s: could not undo the interrupted apply of %s: %s: %s", intent.model,
                  intent.revision, type(exc).__name__, exc, extra={"model": intent.model})
