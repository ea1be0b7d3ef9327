"""A recording `Operator` (watcher.features): what a feature asked the daemon to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.core.errors import RejectedError


@dataclass
class RecordingOperator:
    """Records each request as (action, model, argument, by); `refuse` maps a model to the
    reason a request about it is refused with (RejectedError), like a daemon with no history."""

    calls: list[tuple[str, str | None, str | None, str]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    def _check(self, model: str | None) -> None:
        if model is not None and model in self.refuse:
            raise RejectedError(self.refuse[model])

    def request_resync(self, model: str | None = None) -> None:
        self._check(model)
        self.calls.append(("resync", model, None, "webhook"))

    def request_rollback(self, model: str, to_revision: str | None = None, *,
                         by: str = "operator") -> None:
        self._check(model)
        self.calls.append(("rollback", model, to_revision, by))

    def request_restart(self, model: str, *, by: str = "operator") -> None:
        self._check(model)
        self.calls.append(("restart", model, None, by))
