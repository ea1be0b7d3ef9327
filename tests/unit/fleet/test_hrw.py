"""Rendezvous cohorts: the same in every process, exact sizes, nested steps, minimal moves
when a member joins or leaves, and canary duty spread across rollouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from watcher.fleet import hrw

MEMBERS = [f"host-{i:03d}" for i in range(20)]
STEPS = [10.0, 50.0, 100.0]


def test_the_ranking_is_the_same_in_every_process_whatever_the_hash_seed() -> None:
    code = ("import json; from watcher.fleet import hrw; "
            "print(json.dumps(hrw.ranking([f'host-{i:03d}' for i in range(20)], 'demo', 'r1')))")
    rankings = set()
    for seed in ("1", "2", "random"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        rankings.add(tuple(json.loads(out.stdout)))
    assert len(rankings) == 1
    assert list(rankings.pop()) == hrw.ranking(MEMBERS, "demo", "r1")


def test_cohort_sizes_round_up_and_never_leave_a_step_empty() -> None:
    assert [hrw.cohort_size(p, 20) for p in STEPS] == [2, 10, 20]
    assert [hrw.cohort_size(p, 200) for p in (5, 10, 30, 60, 100)] == [10, 20, 60, 120, 200]
    assert hrw.cohort_size(5, 10) == 1  # 0.5 members round up to one, not none
    assert hrw.cohort_size(30, 3) == 1 and hrw.cohort_size(34, 3) == 2
    assert hrw.cohort_size(10, 0) == 0


def test_steps_are_nested_prefixes_of_one_ranking() -> None:
    for rid in ("a", "b", "c"):
        cohorts = [set(hrw.cohort(MEMBERS, "demo", rid, p)) for p in STEPS]
        assert cohorts[0] < cohorts[1] < cohorts[2] == set(MEMBERS)
        for m in MEMBERS:
            joins = hrw.joins_at(m, MEMBERS, "demo", rid, STEPS)
            assert joins is not None and m in cohorts[joins] and (joins == 0 or m not in cohorts[joins - 1])
    assert hrw.joins_at("stranger", MEMBERS, "demo", "a", STEPS) is None


def test_a_join_or_a_leave_moves_at_most_one_other_member_across_a_step() -> None:
    for k in range(200):
        rid = f"rollout-{k}"
        for percent in STEPS[:-1]:
            size = hrw.cohort_size(percent, 20)
            before = hrw.ranking(MEMBERS, "demo", rid)[:size]
            joined = [m for m in hrw.ranking([*MEMBERS, "newcomer"], "demo", rid)[:size] if m != "newcomer"]
            assert len(set(before) - set(joined)) <= 1  # a newcomer displaces at most one
            leaver = MEMBERS[k % 20]
            left = hrw.ranking([m for m in MEMBERS if m != leaver], "demo", rid)[:size]
            assert set(before) - {leaver} <= set(left)  # nobody else leaves the cohort


def test_canary_duty_is_spread_across_rollouts() -> None:
    firsts = Counter(m for k in range(2000) for m in hrw.cohort(MEMBERS, "demo", f"r{k}", 10))
    assert set(firsts) == set(MEMBERS)
    assert all(120 < n < 280 for n in firsts.values()), firsts  # about 200 each (10 %)
