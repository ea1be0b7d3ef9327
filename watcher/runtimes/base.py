"""The restart contract, shaped for blue/green: prepare, start beside, promote, discard.

The reconciler drives it:  prepare(spec) → start(spec) → health gate on the new instance →
promote(new, old) → commit.  A failed gate → discard(new): the old one never stopped.
Runtimes that cannot run two instances (a `command` that restarts in place, a systemd unit)
return an `Instance` with `in_place=True`; then a failure is repaired by starting the previous
spec again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from watcher.core.spec import ModelSpec

#: Called by `promote` at every traffic step; returns None when healthy, else a reason.
StepCheck = Callable[["Instance"], Awaitable[str | None]]


@dataclass
class Instance:
    id: str
    model: str
    revision: str
    health_url: str | None = None
    in_place: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Runtime(Protocol):
    async def prepare(self, spec: ModelSpec) -> None:
        """Fetch what `start` needs (pull the image). Touches nothing running."""
        ...

    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        """Start an instance serving `spec`, beside the current one where possible."""
        ...

    async def promote(self, new: Instance, old: Instance | None, check: StepCheck) -> None:
        """Move traffic to `new` (calling `check` at each step; a reason aborts and
        restores traffic to `old`, raising HealthGateError), then stop `old`."""
        ...

    async def discard(self, instance: Instance) -> None:
        """Stop and remove an instance that failed; idempotent."""
        ...

    async def instances(self, model: str) -> list[Instance]:
        """What runs for `model` now (found again by label after a daemon restart)."""
        ...

    async def aclose(self) -> None: ...
