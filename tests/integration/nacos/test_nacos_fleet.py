"""The fleet on the real Nacos (the session's shared server: a second JVM would cost ~40 s of
CI): 5 real daemons, each beside its own example server, members of one fleet through the
naming service (ephemeral instances) with rollout records as configs (CAS on md5).

* a healthy rollout with steps [20, 60, 100] (cohorts of 1, 3, 5 members), completed;
* a revision failing its health gate: aborted in the first step, only its cohort ran it;
* max_unavailable 2 with 5 members restarting (the members' reports, polled from the naming
  service's open API: a restart here lasts seconds, a poll every 50 ms cannot miss one);
* the Nacos server restarted mid-rollout: the rollout resumes, nothing is applied twice.

Kept to 5 members: each daemon holds three SDK clients (config, fleet config, naming), the
heaviest part of a member on Nacos; the 20-member rows run on etcd (tests/integration/fleet).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.common import wait_until
from tests.infra.nacos_server import NacosServer
from tests.infra.served import doc
from tests.integration.fleet.harness import Fleet
from watcher.fleet import hrw

N = 5


@pytest.fixture(scope="module")
def nacos_fleet(nacos_server: NacosServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not nacos_server.alive():
        nacos_server.start()
    group = f"MW_FLEET_{time.monotonic_ns() % 10**9}"
    source = {"kind": "nacos", "server_addresses": [nacos_server.address], "group": group,
              "username": nacos_server.username, "password": nacos_server.password,
              "timeout": 3.0, "max_backoff": 1.0, "check_interval": 0.5}
    f = Fleet(tmp_path_factory.mktemp("nacos-fleet"), source, N, ttl=6.0,
              fleet={"group": group + "_FLEET", "discovery_interval": 2.0})
    try:
        f.start()
        yield f
    finally:
        f.close()


def record(f: Fleet) -> dict[str, Any] | None:
    out = f.rollout("status", "demo", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait_phase(f: Fleet, ok: Any, what: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        r = record(f)
        return r if r is not None and ok(r) else None
    try:
        found = wait_until(check, timeout, what, interval=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nrecord: {json.dumps(record(f))[:3000]}") from None
    assert isinstance(found, dict)
    return found


def test_a_healthy_rollout_completes_in_cohorts(nacos_fleet: Fleet) -> None:
    f = nacos_fleet
    base = f.publish(doc(version="v1.0.0"))
    f.wait_all_applied(base)
    revision = f.publish(doc(version="v1.1.0", temperature=0.4), "--rollout",
                         "{steps: [20, 60, 100], soak: 2}")
    r = wait_phase(f, lambda r: r["phase"] == "completed", "the rollout to complete")
    assert [(s["size"], s["serving"]) for s in r["progress"]] == [(1, 1), (3, 3), (5, 5)]
    f.wait_all_applied(revision)
    starts = {s["step"]: s for s in r["progress"]}
    took = {m: float(rows[0]["finished_at"]) for m, rows in f.applied_rows("demo", revision).items()}
    for step in (2, 3):
        before = sum(t < starts[step]["started_at"] for t in took.values())
        assert before == starts[step - 1]["size"], (step, before)
        assert starts[step]["started_at"] - starts[step - 1]["healthy_at"] >= 2.0


def test_a_failing_revision_aborts_in_the_first_step(nacos_fleet: Fleet) -> None:
    f = nacos_fleet
    previous = set(f.applied().values()).pop()
    bad = yaml.safe_load(doc(version="v1.2.0"))
    bad["model"]["parameters"]["fail_health"] = True
    revision = f.publish(yaml.safe_dump(bad).encode(), "--rollout", "{steps: [20, 60, 100], soak: 1}")
    r = wait_phase(f, lambda r: r["phase"] == "aborted", "the abort", timeout=120)
    first = set(hrw.cohort(r["covered"], "demo", r["rollout"], 20))
    assert len(first) == 1 and set(r["failed"]) == first

    def outcomes() -> dict[str, list[str]]:
        return {m: [row["outcome"] for row in d.history("demo") if row["revision"] == revision]
                for m, d in f.daemons.items()}

    wait_until(lambda: all(o and "pending" not in o for o in outcomes().values()), 60,
               "every member to have handled the revision")
    f.wait_all_applied(previous)
    assert {m: o for m, o in outcomes().items()} == {
        m: ["failed"] if m in first else ["rejected"] for m in f.members}
    assert {m for m, s in f.servers.items() if "v1.2.0" in s.log.read_text()} == first


def test_max_unavailable_on_nacos(nacos_fleet: Fleet, nacos_server: NacosServer) -> None:
    f = nacos_fleet
    base = f.publish(doc(version="v1.2.5"))  # every member running, so the rollout restarts
    f.wait_all_applied(base, timeout=120)
    group = str(f.fleet_options["group"])
    seen: list[set[str]] = []
    stop = threading.Event()

    def poll() -> None:
        token = nacos_server.token()
        with httpx.Client(timeout=2) as client:
            while not stop.is_set():
                r = client.get(f"{nacos_server.url}/v3/admin/ns/instance/list", params={
                    "serviceName": "model-watcher", "groupName": group, "accessToken": token})
                if r.status_code == 200:
                    now = set()
                    data = r.json().get("data")
                    for inst in data if isinstance(data, list) else (data or {}).get("hosts", []):
                        report = json.loads(inst.get("metadata", {}).get("r", "{}"))
                        if (report.get("m", {}).get("demo") or [""] * 5)[4] == "restarting":
                            now.add(report["id"])
                    seen.append(now)
                time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        revision = f.publish(doc(version="v1.3.0", runtime={"env": {"SERVER_FLAVOR": "c"}}),
                             "--rollout", "{steps: [100], soak: 0, max_unavailable: 2}")
        f.wait_all_applied(revision, timeout=120)
    finally:
        stop.set()
        watcher.join(5)
    assert max(len(s) for s in seen) == 2, [s for s in seen if s][:20]
    # a 50 ms poll of the instance list can miss a short slot, so that every member went
    # through a restart is read from its own history, not from the samples
    for m, rows in f.applied_rows("demo", revision).items():
        assert len(rows) == 1 and rows[0]["plan"].startswith("restart"), (m, rows)


def test_nacos_restarted_mid_rollout_resumes_and_applies_once(
        nacos_fleet: Fleet, nacos_server: NacosServer) -> None:
    f = nacos_fleet
    revision = f.publish(doc(version="v1.4.0", temperature=0.2), "--rollout",
                         "{steps: [20, 60, 100], soak: 3}")
    wait_phase(f, lambda r: r["serving"] >= 1, "step 1 to be taken")
    nacos_server.stop()
    time.sleep(2)
    nacos_server.start()
    wait_phase(f, lambda r: r["phase"] == "completed", "the rollout to complete", timeout=180)
    f.wait_all_applied(revision, timeout=60)
    for m, d in f.daemons.items():
        applied = [row["revision"] for row in d.history("demo") if row["outcome"] == "applied"]
        assert len(applied) == len(set(applied)), f"{m} applied a revision twice: {applied}"

