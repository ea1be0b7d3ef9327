"""What an operator (the CLI, an Alertmanager alert) may ask: roll back, restart.

Both run under the model's lock and take an apply slot like any revision, and both end in
one recorded Outcome (action `rollback` or `restart`). A request that cannot be honoured at
all (no earlier stable revision, nothing applied) raises RejectedError and records nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from watcher.core import policy
from watcher.core.errors import ApplyError, RejectedError
from watcher.core.executor import Executor
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.core.pipeline import Pipeline
from watcher.core.recorder import Recorder
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.observability.tracing import get_tracer
from watcher.settings import Settings

log = logging.getLogger("watcher.core.actions")


class Actions:
    def __init__(self, settings: Settings, state: State, executor: Executor,
                 pipeline: Pipeline, recorder: Recorder) -> None:
        self.settings = settings
        self.state = state
        self.executor = executor
        self.pipeline = pipeline
        self.recorder = recorder

    async def rollback(self, model: str, to_revision: str | None, by: str) -> Outcome:
        """Re-apply the last stable revision before the applied one (or `to_revision`).

        Downgrades are allowed here, and only here; verification still runs.
        """
        applied = self.state.applied(model)
        if to_revision is not None:
            target = self.state.find_revision(model, to_revision)
            if target is None:
                raise RejectedError(f"{model}: no applied revision {to_revision} in history")
        else:
            target = self.state.last_stable(model, before=applied.revision if applied else None)
            if target is None:
                raise RejectedError(f"{model}: no earlier stable revision to roll back to")
        spec = ModelSpec.model_validate(target["spec"])
        previous = ModelSpec.model_validate(applied.spec) if applied else None
        policy.check(spec, environment=self.settings.environment,
                     settings=self.settings.policy, applied=previous, rollback=True)
        await self.executor.verify(spec)
        revision = str(target["revision"])
        with get_tracer().span("revision", model=model, revision=revision):
            row = self.state.record_seen(model, revision, source="rollback",
                                         version=spec.version, spec=spec.canonical(),
                                         trace_id=get_tracer().trace_id())
            frm = applied.revision if applied else "-"
            return await self.pipeline.apply(
                row, spec, previous, revision, action=Action.ROLLBACK, by=by,
                started=time.monotonic(), trace_id=get_tracer().trace_id(),
                previous_revision=applied.revision if applied else None,
                reason=f"rolled back from {frm} by {by}")

    async def restart(self, model: str, by: str) -> Outcome:
        """Restart the applied spec of `model` through the runtime (same revision)."""
        applied = self.state.applied(model)
        if applied is None:
            raise RejectedError(f"{model}: nothing applied, nothing to restart")
        spec = ModelSpec.model_validate(applied.spec)
        base = Outcome(Verdict.APPLIED, model, applied.revision, f"requested by {by}",
                       action=Action.RESTART, by=by, version=spec.version, how="restart")
        started = time.monotonic()
        try:
            await self.executor.restart(spec, applied.revision)
        except ApplyError as exc:
            return self.recorder.record(replace(
                base, verdict=Verdict.FAILED, reason=exc.reason, error=type(exc).__name__,
                duration=time.monotonic() - started))
        return self.recorder.record(replace(base, duration=time.monotonic() - started))
