"""The rollout state machine (decide.py) and the record's strict grammar (record.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from watcher.core.errors import SettingsError
from watcher.fleet.backend import Document
from watcher.fleet.decide import covered, decide, tally
from watcher.fleet.record import RolloutRecord, parse_policy
from watcher.fleet.report import MemberReport, ModelReport

CONTENT = b"name: demo\nversion: v2.0.0\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
MEMBERS = [f"m{i:02d}" for i in range(20)]


def record(policy: str = "{steps: [10, 50, 100], soak: 5}", **changes: Any) -> RolloutRecord:
    data: dict[str, Any] = {"id": "00ff00ff00ff00ff", "model": "demo", "sha256": SHA,
                            "policy": parse_policy(policy), "created_at": 1000.0, **changes}
    return RolloutRecord.model_validate(data)


def reports(serving: set[str] = frozenset(), failed: dict[str, str] | None = None,  # type: ignore[assignment]
            unhealthy: set[str] = frozenset(), members: list[str] = MEMBERS,  # type: ignore[assignment]
            latency: dict[str, str] | None = None, labels: Any = None) -> dict[str, MemberReport]:
    out = {}
    for m in members:
        model = ModelReport(revision="42" if m in serving else "41", version="v2.0.0",
                            last="42" if m in (failed or {}) or m in serving else "41",
                            outcome="failed" if m in (failed or {}) else "applied",
                            health="failing" if m in unhealthy else ("ok" if m in serving else ""),
                            note=(failed or {}).get(m, ""), latency=(latency or {}).get(m, ""))
        out[m] = MemberReport(m, labels(m) if labels else {}, {"demo": model})
    return out


def started(policy: str = "{steps: [10, 50, 100], soak: 5}", now: float = 1001.0) -> RolloutRecord:
    new = decide(record(policy), reports(), now, document=Document("42", CONTENT))
    assert new is not None
    return new


def test_a_pending_rollout_starts_once_the_controller_sees_its_document() -> None:
    assert decide(record(), reports(), 1001.0, document=None) is None
    assert decide(record(), reports(), 1001.0, document=Document("42", b"other bytes")) is None
    r = started()
    assert (r.phase, r.step, r.revision, r.members) == ("progressing", 0, "42", tuple(MEMBERS))
    assert r.history[0].size == 2 and len(r.cohort()) == 2
    gone = decide(record(), reports(), 1000.0 + 601, document=None)
    assert gone is not None and gone.phase == "aborted" and "never published" in gone.reason


def test_a_step_advances_only_after_its_cohort_is_healthy_for_the_soak() -> None:
    r = started()
    first = set(r.cohort())
    assert decide(r, reports(serving=set(list(first)[:1])), 1002.0) is None  # one still missing
    healthy = decide(r, reports(serving=first), 1002.0)
    assert healthy is not None and healthy.history[-1].healthy_at == 1002.0 and healthy.step == 0
    assert decide(healthy, reports(serving=first), 1006.9) is None  # soak 5 s not over
    moved = decide(healthy, reports(serving=first), 1007.0)
    assert moved is not None and moved.step == 1 and moved.history[-1].started_at == 1007.0
    assert moved.history[0].ended_at == 1007.0 and set(moved.cohort()) > first
    assert len(moved.cohort()) == 10


def test_the_last_step_completes_and_a_pause_step_waits_for_promote() -> None:
    r = started("{steps: [{percent: 50, pause: true}, 100], soak: 0}")
    cohort = set(r.cohort())
    paused = decide(r, reports(serving=cohort), 1002.0)  # soak 0: healthy and on in one write
    assert paused is not None and paused.phase == "paused" and "promote" in paused.reason
    assert paused.history[0].healthy_at == 1002.0
    assert decide(paused, reports(serving=cohort), 1010.0) is None
    from watcher.fleet.decide import advance

    last = advance(paused, 1011.0)
    assert (last.phase, last.step) == ("progressing", 1)
    done = decide(last, reports(serving=set(MEMBERS)), 1012.0)
    assert done is not None and done.phase == "completed" and done.history[-1].healthy_at == 1012.0


@pytest.mark.parametrize(("kind", "policy", "expect"), [
    ("failed", "{steps: [10, 100]}", "failed at step 1 of 2"),
    ("unhealthy", "{steps: [10, 100]}", "unhealthy at step 1 of 2"),
    ("metric", "{steps: [10, 100], abort: {metric: {name: probe_latency_ms, above: 100}}}",
     "metric threshold"),
])
def test_abort_conditions_name_the_members(kind: str, policy: str, expect: str) -> None:
    r = started(policy)
    canary = r.cohort()[0]
    given = {"failed": {"failed": {canary: "health gate failed"}},
             "unhealthy": {"serving": {canary}, "unhealthy": {canary}},
             "metric": {"serving": {canary}, "latency": {canary: "250"}}}[kind]
    out = decide(r, reports(**given), 1002.0)  # type: ignore[arg-type]
    assert out is not None and out.phase == "aborted"
    assert expect in out.reason and canary in out.reason and out.failed == (canary,)
    assert decide(out, reports(**given), 1003.0) is None  # final  # type: ignore[arg-type]


def test_a_threshold_above_one_tolerates_fewer_failures() -> None:
    r = started("{steps: [10, 100], abort: {failed: 2}}")
    one = reports(failed={r.cohort()[0]: "x"})
    assert decide(r, one, 1002.0) is None
    two = reports(failed={m: "x" for m in r.cohort()})
    out = decide(r, two, 1002.0)
    assert out is not None and out.phase == "aborted"


def test_a_step_not_healthy_within_the_deadline_aborts_naming_the_late() -> None:
    r = started("{steps: [10, 100], progress_deadline: 30}")
    assert decide(r, reports(), 1030.0) is None
    out = decide(r, reports(), 1032.0)
    assert out is not None and out.phase == "aborted" and "not healthy within 30s" in out.reason
    assert r.cohort()[0] in out.reason


def test_joins_and_leaves_update_the_covered_members_and_cohorts_only_grow() -> None:
    r = started()
    first = set(r.cohort())
    grown = reports(serving=first, members=[*MEMBERS, "m99"])
    out = decide(r, grown, 1002.0)
    assert out is not None and "m99" in out.members and len(out.members) == 21
    assert len(out.cohort()) == 3  # 10 % of 21 rounds up
    t = tally(out, grown)
    assert first <= t.took and t.missing == [m for m in out.cohort() if m not in first]
    leaver = next(m for m in MEMBERS if m not in first)
    shrunk = reports(serving=first, members=[m for m in MEMBERS if m != leaver])
    out2 = decide(r, shrunk, 1002.0)
    assert out2 is not None and leaver not in out2.members and set(out2.cohort()) == first


def test_the_selector_limits_who_is_covered_and_paused_rollouts_still_abort() -> None:
    def zone(m: str) -> dict[str, str]:
        return {"zone": "a" if int(m[1:]) % 2 == 0 else "b"}

    zoned = reports(labels=zone)
    r = decide(record("{steps: [50, 100], selector: {zone: a}}"), zoned, 1001.0,
               document=Document("42", CONTENT))
    assert r is not None
    assert covered(r, zoned) == r.members == tuple(m for m in MEMBERS if int(m[1:]) % 2 == 0)
    assert len(r.cohort()) == 5
    paused = r.next(phase="paused")
    canary = paused.cohort()[0]
    assert decide(paused, reports(serving=set(paused.cohort()), labels=zone), 2000.0) is None
    out = decide(paused, reports(failed={canary: "boom"}, labels=zone), 2000.0)
    assert out is not None and out.phase == "aborted"


@pytest.mark.parametrize(("text", "problem"), [
    ("{steps: [50, 10, 100]}", "steps must increase"),
    ("{steps: [10, 50]}", "last step must be 100"),
    ("{steps: [0, 100]}", "greater than 0"),
    ("{stepz: [100]}", "stepz"),
    ("{selector: {'zone a': x}}", "labels are"),
    ("{max_unavailable: 0}", "greater than or equal to 1"),
    ("[1, 2]", "must be a mapping"),
    ("{steps: [10, 100], abort: {metric: {name: cpu, above: 1}}}", "probe_latency_ms"),
])
def test_bad_policies_are_refused_naming_the_field(text: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        parse_policy(text)


def test_defaults_and_bad_records() -> None:
    p = parse_policy("")
    assert [s.percent for s in p.steps] == [5, 10, 30, 60, 100] and p.max_unavailable == 1
    assert p.soak_of(0) == 60 and parse_policy("{steps: [{percent: 100, soak: 3}]}").soak_of(0) == 3
    with pytest.raises(ValueError, match="invalid rollout record"):
        RolloutRecord.decode(b'{"id": "zz", "model": "demo"}')
    with pytest.raises(ValueError, match="step 5"):
        record(step=5)
    with pytest.raises(ValueError, match="not member ids"):
        record(members=["ok", "not ok!"])
    r = started()
    assert RolloutRecord.decode(r.encode()) == r
    assert r.where() == "step 1 of 3 (10 % of 20 members)"
    assert r.next().generation == r.generation + 1
