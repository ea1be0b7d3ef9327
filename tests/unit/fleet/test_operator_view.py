"""What operators see and get: `rollout pause|resume|promote|abort` as record changes, the
status table, the leader's announcements, the `rollout_aborted` alert and the metrics."""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

import pytest

from watcher.alerts.rules import Engine, Rule
from watcher.cli.rollout import change
from watcher.cli.rollout_view import render, snapshot
from watcher.core.errors import RejectedError
from watcher.core.events import Event, Kind
from watcher.fleet.controller import Controller
from watcher.fleet.record import RolloutRecord, parse_policy
from watcher.fleet.report import MemberReport, ModelReport
from watcher.fleet.stats import STATS
from watcher.fleet.view import RolloutView
from watcher.observability.metrics import Metrics

MEMBERS = tuple(f"m{i:02d}" for i in range(10))


def rec(phase: str = "progressing", step: int = 0) -> RolloutRecord:
    data: dict[str, Any] = {
        "id": "abcdef0123456789", "model": "demo", "sha256": hashlib.sha256(b"x").hexdigest(),
        "policy": parse_policy("{steps: [10, 50, 100]}"), "phase": phase, "step": step,
        "members": MEMBERS, "revision": "42", "version": "v2.0.0", "created_at": 1.0}
    record = RolloutRecord.model_validate(data)
    from watcher.fleet.record import StepLog

    return record.next(history=(StepLog(step=step, size=len(record.cohort()), started_at=1.0),))


def args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(full=kw.get("full", False), reason=kw.get("reason", ""))


def test_operator_actions_are_record_changes_and_refuse_what_does_not_apply() -> None:
    r = rec()
    paused = change(r, "pause", args(), 5.0)
    assert paused.phase == "paused" and "paused by" in paused.reason
    assert change(paused, "resume", args(), 6.0).phase == "progressing"
    promoted = change(r, "promote", args(), 7.0)
    assert (promoted.step, promoted.history[-1].started_at, promoted.history[0].ended_at) == (1, 7.0, 7.0)
    assert change(r, "promote", args(full=True), 7.0).step == 2
    aborted = change(r, "abort", args(reason="bad output in zone a"), 8.0)
    assert aborted.phase == "aborted" and aborted.reason.endswith(": bad output in zone a")
    for record, action, words in ((aborted, "pause", "is aborted"), (r, "resume", "not paused"),
                                  (paused, "pause", "paused already"),
                                  (rec(step=2), "promote", "last step"),
                                  (rec(phase="pending"), "pause", "has not started")):
        with pytest.raises(RejectedError, match=words):
            change(record, action, args(), 9.0)


def test_the_status_table_has_a_bar_per_step_and_a_row_per_member() -> None:
    r = rec(step=1)
    serving = set(r.cohort(0))
    reports = {m: MemberReport(m, {"zone": "a"}, {"demo": ModelReport(
        "42" if m in serving else "41", "v2.0.0" if m in serving else "v1.0.0", state="serving"
        if m in serving else "waiting", health="ok" if m in serving else "",
        note="" if m in serving else "waiting: step 2 of 3")}) for m in MEMBERS}
    data = snapshot(r, reports)
    assert [(s["size"], s["serving"]) for s in data["progress"]] == [(1, 1), (5, 1), (10, 1)]
    text = render(data)
    assert "step 2 of 3" in text and "█" in text and "waiting: step 2 of 3" in text
    assert len([ln for ln in text.splitlines() if ln.startswith("m0")]) == 10
    assert {row["member"] for row in data["rows"] if row["in_cohort"]} == set(r.cohort(1))


def test_the_leader_announces_each_transition_once() -> None:
    view = RolloutView()
    said: list[str] = []
    c = Controller(None, view, lambda record, phase: said.append(phase), lambda _: None)  # type: ignore[arg-type]
    pending = rec().next(phase="pending")
    c._announce_changes("demo", pending)
    r = rec()
    for record in (r, r, change(r, "pause", args(), 2.0), change(change(r, "pause", args(), 2.0),
                                                                  "resume", args(), 3.0)):
        c._announce_changes("demo", record)
    moved = change(r, "promote", args(), 4.0)
    c._announce_changes("demo", moved)
    c._announce_changes("demo", change(moved, "abort", args(), 6.0))
    assert said == ["started", "paused", "resumed", "step", "aborted"]


def test_rollout_aborted_alerts_once_and_resolves_on_completion() -> None:
    engine = Engine([Rule(name="rollouts", condition="rollout_aborted", notify=["ops"])])
    aborted = Event(Kind.ROLLOUT, "demo", "42", reason="rollout abc at step 1 of 3: 2 failed",
                    phase="aborted", ok=False)
    fired = engine.on_message(aborted, 10.0)
    assert [n.status for n in fired] == ["firing"] and "rollout aborted" in fired[0].text
    assert engine.on_message(aborted, 11.0) == []
    assert engine.on_message(Event(Kind.ROLLOUT, "demo", "43", phase="step"), 12.0) == []
    done = engine.on_message(Event(Kind.ROLLOUT, "demo", "43", phase="completed"), 13.0)
    assert [n.status for n in done] == ["resolved"]


def test_fleet_metrics_are_read_at_scrape_time() -> None:
    STATS.alive, STATS.leading = True, True
    STATS.rollouts["demo"] = (2, 3, "progressing")
    STATS.waiting.add("demo")
    STATS.transitions[("demo", "aborted")] += 1
    try:
        text = Metrics().render().decode()
    finally:
        STATS.rollouts.clear()
        STATS.waiting.clear()
        STATS.transitions.clear()
        STATS.alive = STATS.leading = False
    for line in ("model_watcher_fleet_alive 1.0", 'model_watcher_rollout_step{model="demo"} 2.0',
                 'model_watcher_rollout_phase{model="demo",phase="progressing"} 1.0',
                 'model_watcher_rollout_waiting{model="demo"} 1.0',
                 'model_watcher_rollout_transitions_total{model="demo",phase="aborted"} 1.0'):
        assert line in text, line
