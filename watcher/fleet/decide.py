"""The rollout state machine, as a pure function: record + live reports + now -> next record.

    pending      the controller has not seen the document yet; once the center holds the
                 document with the record's sha256: progressing at step 1 (revision filled)
    progressing  the current step's cohort (hrw ranking of the covered members) takes the
                 revision; once every member of it serves it and none fails its soak probes,
                 and that has lasted the step's soak: the next step (or `paused` after a
                 step with `pause`, or `completed` after the last)
    paused       nothing advances (abort conditions still apply); `rollout resume|promote`
    aborted      an abort condition, the progress deadline, or `rollout abort`; every member
                 that took the revision rolls back (member.py), the others refuse it
    completed    the whole fleet serves it; members outside the selector take it now

Covered members are the live ones matching the selector that know the model (they report
it); the list is kept in the record so that the controller and every member rank the very
same set. A member already serving the revision counts as taken even when a change of the
list would now rank it later: cohorts only grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.fleet.backend import Document
from watcher.fleet.record import RolloutRecord, StepLog
from watcher.fleet.report import MemberReport


@dataclass(frozen=True)
class Tally:
    """Where the current step stands, from the members' own reports."""

    cohort: list[str]
    took: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unhealthy: dict[str, str] = field(default_factory=dict)
    slow: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.missing and not self.unhealthy and not self.failed


def covered(record: RolloutRecord, reports: dict[str, MemberReport]) -> tuple[str, ...]:
    """Live members the rollout covers: selected by labels and knowing the model."""
    return tuple(sorted(m for m, r in reports.items()
                        if record.covers(r.labels) and record.model in r.models))


def tally(record: RolloutRecord, reports: dict[str, MemberReport]) -> Tally:
    revision, model = record.revision, record.model
    cohort = record.cohort()
    took = {m for m, r in reports.items() if r.model(model).took(revision)}
    failed = {m: r.model(model).note or "failed" for m, r in reports.items()
              if r.model(model).failed(revision)}
    unhealthy = {m: reports[m].model(model).note or "failing" for m in took
                 if reports[m].model(model).health == "failing"}
    slow: dict[str, str] = {}
    metric = record.policy.abort.metric
    if metric is not None:
        for m in took:
            value = reports[m].model(model).latency_ms
            if value is not None and value > metric.above:
                slow[m] = f"{metric.name} {value:g} > {metric.above:g}"
    missing = [m for m in cohort if m not in took and m in reports]
    return Tally(cohort, took, missing, failed, unhealthy, slow)


def decide(record: RolloutRecord, reports: dict[str, MemberReport], now: float, *,
           document: Document | None = None, actor: str = "") -> RolloutRecord | None:
    """The record's next version, or None when nothing is to change."""
    if not record.active:
        return None
    if record.phase == "pending":
        return _start(record, reports, now, document)
    members = covered(record, reports)
    if members != record.members:
        record = record.next(members=members, updated_at=now)
        changed = True
    else:
        changed = False
    t = tally(record, reports)
    reason = _abort_reason(record, t, now)
    if reason is not None:
        return end(record, now, "aborted", reason, failed=sorted({*t.failed, *t.unhealthy, *t.slow}))
    if record.phase == "progressing":
        advanced = _progress(record, t, now)
        if advanced is not None:
            return advanced
    return record if changed else None


def _start(record: RolloutRecord, reports: dict[str, MemberReport], now: float,
           document: Document | None) -> RolloutRecord | None:
    import hashlib

    if document is None or hashlib.sha256(document.content).hexdigest() != record.sha256:
        if now - record.created_at > record.policy.progress_deadline:
            return end(record, now, "aborted", "the document of this rollout was never "
                        "published (or was replaced before the rollout began)")
        return None
    members = covered(record, reports)
    started = record.next(phase="progressing", revision=document.revision, members=members,
                          step=0, updated_at=now)
    size = len(started.cohort())
    return started.next(history=(StepLog(step=0, size=size, started_at=now),))


def _abort_reason(record: RolloutRecord, t: Tally, now: float) -> str | None:
    abort = record.policy.abort
    where = f"step {record.step + 1} of {len(record.policy.steps)}"
    if len(t.failed) >= abort.failed:
        return f"{len(t.failed)} member(s) failed at {where}: {_list(t.failed)}"
    if len(t.unhealthy) >= abort.unhealthy:
        return f"{len(t.unhealthy)} member(s) unhealthy at {where}: {_list(t.unhealthy)}"
    if abort.metric is not None and len(t.slow) >= abort.metric.members:
        return f"{len(t.slow)} member(s) over the metric threshold at {where}: {_list(t.slow)}"
    log = record.history[-1] if record.history else None
    if (record.phase == "progressing" and log is not None and log.healthy_at is None
            and now - log.started_at > record.policy.progress_deadline):
        late = ", ".join(t.missing[:5]) + (" ..." if len(t.missing) > 5 else "")
        return (f"{where} not healthy within {record.policy.progress_deadline:g}s"
                + (f"; not serving it yet: {late}" if late else ""))
    return None


def _progress(record: RolloutRecord, t: Tally, now: float) -> RolloutRecord | None:
    log = record.history[-1]
    if not t.healthy:
        if log.healthy_at is not None:  # someone fell back: the soak starts again
            return _log(record, log.model_copy(update={"healthy_at": None}))
        return None
    if log.healthy_at is None:  # healthy from now on (a soak of 0 goes on at once)
        record = _log(record, log.model_copy(update={"healthy_at": now}), updated_at=now)
        if record.policy.soak_of(record.step) > 0:
            return record
    elif now - log.healthy_at < record.policy.soak_of(record.step):
        return None
    last = record.step + 1 >= len(record.policy.steps)
    if last:
        return end(record, now, "completed", f"every covered member serves {record.revision}")
    if record.policy.steps[record.step].pause:
        return record.next(phase="paused", updated_at=now,
                           reason=f"paused after step {record.step + 1}: `rollout promote` goes on")
    return advance(record, now)


def advance(record: RolloutRecord, now: float, to: int | None = None) -> RolloutRecord:
    """Start step `to` (default: the next one); `rollout promote` does the same."""
    step = record.step + 1 if to is None else to
    step = min(step, len(record.policy.steps) - 1)
    ended = (*record.history[:-1], record.history[-1].model_copy(update={"ended_at": now})) \
        if record.history else ()
    moved = record.next(step=step, phase="progressing", reason="", updated_at=now)
    size = len(moved.cohort())
    return moved.next(history=(*ended, StepLog(step=step, size=size, started_at=now)))


def end(record: RolloutRecord, now: float, phase: str, reason: str,
         failed: list[str] | None = None) -> RolloutRecord:
    history = record.history
    if history and history[-1].ended_at is None:
        history = (*history[:-1], history[-1].model_copy(update={"ended_at": now}))
    return record.next(phase=phase, reason=reason[:1000], history=history, updated_at=now,
                       failed=tuple(failed or ()))


def _log(record: RolloutRecord, log: StepLog, updated_at: float | None = None) -> RolloutRecord:
    changes: dict[str, object] = {"history": (*record.history[:-1], log)}
    if updated_at is not None:
        changes["updated_at"] = updated_at
    return record.next(**changes)


def _list(members: dict[str, str]) -> str:
    shown = [f"{m} ({why})" for m, why in sorted(members.items())[:5]]
    return "; ".join(shown) + (" ..." if len(members) > 5 else "")
