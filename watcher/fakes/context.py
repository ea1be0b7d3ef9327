"""A `FeatureContext` over a real State and AuditLog in a directory of the caller's, with
settings given as keyword arguments and a recording operator: what a feature's unit test
needs to run the feature for real without a daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from watcher.core.events import EventBus
from watcher.core.state import State
from watcher.fakes.operator import RecordingOperator
from watcher.features import FeatureContext
from watcher.observability.audit import AuditLog
from watcher.settings import Settings


def feature_context(state_dir: Path, *, operator: RecordingOperator | None = None,
                    ready: bool = False, **settings: Any) -> FeatureContext:
    """A context whose operator is `operator` (a new RecordingOperator by default)."""
    op = operator if operator is not None else RecordingOperator()
    s = Settings(state_dir=state_dir, **settings)
    return FeatureContext(s, EventBus(), State(state_dir / "state.db"),
                          AuditLog(state_dir / "audit.jsonl"), operator=lambda: op,
                          ready=lambda: ready)


def operator_of(ctx: FeatureContext) -> RecordingOperator:
    """The recording operator behind a context made by `feature_context`."""
    op = ctx.operator()
    assert isinstance(op, RecordingOperator)
    return op
