"""A fleet of 20 real daemons (subprocesses), each beside its own example model server, on a
real 3-member etcd cluster: rollouts end to end (issue 14).

One fleet serves the whole module (starting 20 daemons costs more than any one test), and
the tests run in order on model `demo`, each starting from what the one before left serving:

* a healthy revision with steps [10, 50, 100]: cohort sizes, no step before its soak, a
  member joining and one leaving mid-rollout move nobody else, everyone ends on it;
* a revision failing its health gate everywhere: aborted in the first step, only the first
  cohort ever ran it (their servers' own logs say so), everyone back on the previous one;
* an operator's pause, promote and abort: the members that took it roll back;
* max_unavailable 2 with 20 members restarting, measured from the members' own reports in
  etcd's order, while a member holding a slot is SIGKILLed;
* the controller's daemon and the etcd leader killed mid-rollout: it resumes, nothing twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.infra.common import wait_until
from tests.infra.etcd import EtcdCluster
from tests.infra.served import doc
from tests.integration.fleet.harness import PREFIX, EtcdView, Fleet, ReportStream, member_id
from watcher.fleet import hrw

N = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("fleet-etcd"), size=3).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def fleet(cluster: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    source = {"kind": "etcd", "endpoints": cluster.endpoints, "prefix": PREFIX, "timeout": 2.0,
              "max_backoff": 1.0, "check_interval": 1.0}
    f = Fleet(tmp_path_factory.mktemp("fleet"), source, N)
    try:
        f.start()
        yield f
    finally:
        f.close()


@pytest.fixture
def view(cluster: EtcdCluster) -> EtcdView:
    return EtcdView(cluster.endpoints[0])


def wait_record(view: EtcdView, what: str, ok: Any, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        r = view.record()
        return r if r is not None and ok(r) else None
    try:
        found = wait_until(check, timeout, what, interval=0.1)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nrecord: {json.dumps(view.record())[:2000]}") from None
    assert isinstance(found, dict)
    return found


def serving(fleet: Fleet, revision: str) -> set[str]:
    return {m for m, r in fleet.applied().items() if r == revision}


def applied_at(fleet: Fleet, revision: str) -> dict[str, float]:
    """member -> when its applied row of `revision` finished (its own history)."""
    return {m: float(rows[0]["finished_at"]) for m, rows in fleet.applied_rows("demo", revision).items()
            if rows}


def current(fleet: Fleet) -> str:
    revisions = set(fleet.applied().values())
    assert len(revisions) == 1, f"the fleet is not converged: {fleet.applied()}"
    return str(revisions.pop())


def test_a_healthy_rollout_steps_through_its_cohorts(fleet: Fleet, view: EtcdView) -> None:
    base = fleet.publish(doc(version="v1.0.0"))  # no rollout: all at once, as before
    fleet.wait_all_applied(base)
    spare = fleet.add(N)  # joins mid-rollout
    revision = fleet.publish(doc(version="v1.1.0", temperature=0.5), "--rollout",
                             "{steps: [10, {percent: 50, pause: true}, 100], soak: 2}")
    r = wait_record(view, "step 1 healthy", lambda r: r["phase"] == "progressing"
                    and r["history"][0]["healthy_at"])
    members = r["members"]
    assert len(members) == N
    first = set(hrw.cohort(members, "demo", r["id"], 10))
    assert serving(fleet, revision) == first and len(first) == 2
    last = next(m for m in members if hrw.joins_at(m, members, "demo", r["id"], [10, 50, 100]) == 2)
    status = fleet.daemons[last].cli("status").stdout
    assert re.search(r"demo: waiting: step [12] of 3 \((10|50) % of 20 members\); this member "
                     r"joins at step 3", status), status

    r = wait_record(view, "step 2 paused", lambda r: r["phase"] == "paused")
    second = set(hrw.cohort(members, "demo", r["id"], 50))
    assert serving(fleet, revision) == second and len(second) == 10 and first < second
    started = [h["started_at"] for h in r["history"]]
    healthy = [h["healthy_at"] for h in r["history"]]
    assert started[1] - healthy[0] >= 2.0, "step 2 began before step 1's soak was over"
    took = applied_at(fleet, revision)
    assert sum(t < started[1] for t in took.values()) == 2, "only step 1's cohort before step 2"

    leaver = next(m for m in fleet.members if m not in second and m != spare.settings["fleet"]["member_id"])
    fleet.daemons[leaver].stop()
    spare.start(wait_ready=False)
    joiner = member_id(N)
    r = wait_record(view, "the join and the leave counted", lambda r: joiner in r["members"]
                    and leaver not in r["members"])
    assert len(r["members"]) == N
    moved = set(hrw.cohort(r["members"], "demo", r["id"], 50)) - second
    assert len(moved) <= 1 and moved <= {joiner}, "a join/leave moved others across the step"
    # cohorts only grow: nobody that took it was sent back
    assert second <= serving(fleet, revision)
    promote = fleet.rollout("promote", "demo")
    assert promote.returncode == 0, promote.stderr
    wait_record(view, "completed", lambda r: r["phase"] == "completed", timeout=90)
    everyone = [m for m in fleet.members if m != leaver]
    fleet.wait_all_applied(revision, members=everyone)
    for m, rows in fleet.applied_rows("demo", revision).items():
        assert len(rows) == (0 if m == leaver else 1), (m, rows)
    fleet.daemons[leaver].start()
    fleet.wait_all_applied(revision, timeout=60)  # the leaver comes back: completed, admitted


def test_a_revision_failing_its_health_gate_aborts_in_the_first_step(fleet: Fleet, view: EtcdView) -> None:
    previous = current(fleet)
    bad = yaml.safe_load(doc(version="v1.2.0", temperature=0.9))
    bad["model"]["parameters"]["fail_health"] = True
    revision = fleet.publish(yaml.safe_dump(bad).encode(), "--rollout", "{steps: [10, 50, 100], soak: 1}")
    r = wait_record(view, "aborted", lambda r: r["phase"] == "aborted", timeout=120)
    first = set(hrw.cohort(r["members"], "demo", r["id"], 10))
    assert r["step"] == 0 and set(r["failed"]) <= first and r["failed"]
    assert "failed at step 1 of 3" in r["reason"]

    def outcomes() -> dict[str, list[str]]:
        return {m: [row["outcome"] for row in d.history("demo") if row["revision"] == revision]
                for m, d in fleet.daemons.items()}

    wait_until(lambda: all(o and "pending" not in o for o in outcomes().values()), 60,
               "every member to have handled the revision")
    fleet.wait_all_applied(previous, timeout=60)
    for m, seen in outcomes().items():
        assert seen == (["failed"] if m in first else ["rejected"]), (m, seen)
    # the model servers' own logs: the bad version reached no server outside the first cohort
    reached = {m for m, s in fleet.servers.items() if "v1.2.0" in s.log.read_text()}
    assert reached and reached <= first
    for m in set(fleet.members) - first:
        row = next(row for row in fleet.daemons[m].history("demo") if row["revision"] == revision)
        assert "was aborted" in row["reason"]
    for m, server in fleet.servers.items():
        assert server.config()["spec"]["version"] == "v1.1.0", m
    leader = view.leader()
    assert leader is not None
    lines = [a for a in fleet.daemons[leader].audit() if a["action"] == "rollout_aborted"]
    assert len(lines) == 1 and set(lines[0]["failed"]) == set(r["failed"])


def test_pause_promote_and_abort_roll_back_the_members_that_took_it(fleet: Fleet, view: EtcdView) -> None:
    previous = current(fleet)
    revision = fleet.publish(doc(version="v1.3.0", temperature=0.3), "--rollout",
                             "{steps: [10, 50, 100], soak: 600}")
    r = wait_record(view, "step 1 healthy", lambda r: r["history"] and r["history"][0]["healthy_at"])
    assert fleet.rollout("pause", "demo").returncode == 0
    assert "paused" in fleet.rollout("status", "demo").stdout
    out = fleet.rollout("promote", "demo")
    assert out.returncode == 0 and "step 2 of 3" in out.stdout, out.stderr
    second = set(hrw.cohort(r["members"], "demo", r["id"], 50))
    wait_until(lambda: serving(fleet, revision) == second, 60, "step 2's cohort to take it")
    out = fleet.rollout("abort", "demo", "--reason", "wrong answers in zone b")
    assert out.returncode == 0, out.stderr
    fleet.wait_all_applied(previous, timeout=60)
    for m in second:
        rows = fleet.daemons[m].history("demo")
        back = [row for row in rows if row["outcome"] == "rolled_back" and row["revision"] == previous]
        assert back and "by rollout" in back[0]["reason"], rows[:3]
        assert sum(row["revision"] == revision and row["outcome"] == "applied" for row in rows) == 1
    r = view.record()
    assert r is not None and r["phase"] == "aborted" and "wrong answers in zone b" in r["reason"]
    again = fleet.rollout("abort", "demo")
    assert again.returncode == 1 and "is aborted" in again.stderr


def test_max_unavailable_holds_with_20_members_restarting_and_a_holder_killed(
        fleet: Fleet, view: EtcdView, cluster: EtcdCluster) -> None:
    stream = ReportStream(cluster.endpoints[0])
    try:
        revision = fleet.publish(doc(version="v1.4.0", runtime={"env": {"SERVER_FLAVOR": "b"}}),
                                 "--rollout", "{steps: [100], soak: 0, max_unavailable: 2}")
        holder = wait_until(lambda: next(iter(stream.restarting), None), 60, "a member restarting")
        assert isinstance(holder, str)
        fleet.daemons[holder].kill9()
        others = [m for m in fleet.members if m != holder]
        fleet.wait_all_applied(revision, timeout=180, members=others)
        fleet.daemons[holder].start()
        fleet.wait_all_applied(revision, timeout=60)
    finally:
        stream.close()
    assert stream.max_restarting == 2, "the limit must be reached, and never passed"
    assert stream.seen_restarting == set(fleet.members)
    for m, rows in fleet.applied_rows("demo", revision).items():
        assert len(rows) == 1 and rows[0]["plan"].startswith("restart"), (m, rows)


def test_the_controller_and_the_etcd_leader_killed_mid_rollout(
        fleet: Fleet, view: EtcdView, cluster: EtcdCluster) -> None:
    revision = fleet.publish(doc(version="v1.5.0", temperature=0.1,  # a hot swap
                                 runtime={"env": {"SERVER_FLAVOR": "b"}}),
                             "--rollout", "{steps: [10, 50, 100], soak: 1}")
    wait_record(view, "step 2", lambda r: r["step"] >= 1)
    controller = view.leader()
    assert controller is not None
    fleet.daemons[controller].kill9()
    etcd_leader = cluster.leader()
    etcd_leader.kill9()
    wait_until(lambda: view_any(cluster) and view_leader(cluster) not in (None, controller), 30,
               "another daemon to lead the controller")
    etcd_leader.start()
    fleet.daemons[controller].start()
    wait_record_any(cluster, lambda r: r["phase"] == "completed", 120)
    fleet.wait_all_applied(revision, timeout=60)
    for m, d in fleet.daemons.items():
        applied = [row["revision"] for row in d.history("demo") if row["outcome"] == "applied"]
        assert len(applied) == len(set(applied)), f"{m} applied a revision twice: {applied}"


def _alive_view(cluster: EtcdCluster) -> EtcdView | None:
    for m in cluster.members:
        if m.alive():
            return EtcdView(m.url)
    return None


def view_any(cluster: EtcdCluster) -> bool:
    return _alive_view(cluster) is not None


def view_leader(cluster: EtcdCluster) -> str | None:
    v = _alive_view(cluster)
    try:
        return v.leader() if v else None
    except Exception:  # an election in progress
        return None


def wait_record_any(cluster: EtcdCluster, ok: Any, timeout: float) -> None:
    def check() -> bool:
        v = _alive_view(cluster)
        r = v.record() if v else None
        return bool(r and ok(r))
    wait_until(check, timeout, "the rollout to complete")



def test_a_rollout_whose_document_loses_its_if_revision_race_is_aborted(
        fleet: Fleet, view: EtcdView) -> None:
    previous = current(fleet)
    path = fleet.root / "stale.yaml"
    path.write_bytes(doc(version="v1.6.0"))
    out = fleet.any_daemon().cli("publish", "demo", str(path), "--if-revision", "1", "--rollout", "{}")
    assert out.returncode == 1 and "someone else published meanwhile" in out.stderr
    r = view.record()
    assert r is not None and r["phase"] == "aborted" and "publish of its document failed" in r["reason"]
    assert set(fleet.applied().values()) == {previous}
