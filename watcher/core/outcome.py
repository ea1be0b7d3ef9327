"""The one typed record of what became of a revision or an operator's action.

Kubernetes controllers keep one status with a reason; Argo Rollouts one phase with a message.
Here every path through the daemon ends in exactly one `Outcome`, handed to the `Recorder`
(core/recorder.py), which writes the state and the log line and publishes it on the event
bus, where the audit log, metrics, alerts, sd_notify and the CLI's buffer read it. No path
writes any of those by itself, so none can forget one of them.

    verdict   what happened:  applied | noop | rejected | failed | deleted | superseded
    action    what was asked: update (a new revision from the source) | delete (the
              document disappeared) | rollback | restart (operator or alert) | recover
              (after a kill mid-apply)
    label     the name history, metrics and alerts use: the verdict, except that a
              successful rollback is `rolled_back` and a successful restart `restarted`
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from watcher.core.plan import Plan


class Verdict(StrEnum):
    APPLIED = "applied"          # the server serves it; committed
    NOOP = "noop"                # valid; nothing the server sees changed; committed
    REJECTED = "rejected"        # parse, policy or verification refused it; server untouched
    FAILED = "failed"            # applying it failed; the last good state serves
    DELETED = "deleted"          # the document disappeared; kept or unloaded (see reason)
    SUPERSEDED = "superseded"    # interrupted by a daemon restart; handled anew


class Action(StrEnum):
    UPDATE = "update"
    DELETE = "delete"
    ROLLBACK = "rollback"
    RESTART = "restart"
    RECOVER = "recover"


#: Labels in history, metrics and alerts (a bounded set).
LABELS = ("applied", "noop", "rejected", "failed", "deleted", "superseded", "rolled_back",
          "restarted")


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    model: str
    revision: str
    reason: str = ""
    action: Action = Action.UPDATE
    #: who asked: "source", "operator", "alertmanager", "daemon", a user name
    by: str = "source"
    version: str | None = None
    plan: Plan | None = None
    #: how the plan was carried out: "hot", "restart", "restart [image@sha256:...]"
    how: str | None = None
    #: the exception class of a rejection or failure (metrics classify by it)
    error: str | None = None
    #: the version put back after a failure (the previous good spec had to be restored)
    restored: str | None = None
    #: the model was unloaded from the server (a delete with on_delete = "unload")
    unloaded: bool = False
    duration: float | None = None
    trace_id: str | None = None
    #: when the source observed the change (publish-to-applied latency)
    observed_at: float | None = None
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        """The server serves what was asked (or nothing needed to change)."""
        return self.verdict in (Verdict.APPLIED, Verdict.NOOP, Verdict.DELETED)

    @property
    def label(self) -> str:
        if self.verdict in (Verdict.APPLIED, Verdict.NOOP):
            if self.action is Action.ROLLBACK:
                return "rolled_back"
            if self.action is Action.RESTART:
                return "restarted"
        return str(self.verdict)

    @property
    def plan_kind(self) -> str:
        """`hot`, `restart` or `noop` (a bounded metric label); "" without a plan."""
        return self.plan.kind if self.plan is not None else ""

    def describe_plan(self) -> str | None:
        """The plan as history shows it: how it was carried out and the changed paths."""
        if self.plan is None:
            return None
        return f"{self.how or self.plan.kind} ({self.plan.reason})"
