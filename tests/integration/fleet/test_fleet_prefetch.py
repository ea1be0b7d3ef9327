"""Fleet members outside the current step stage the revision's remote weights while they
wait (core/prefetch.py), so their step downloads nothing: 3 real daemons on a real etcd,
weights on a real nginx whose access log counts the downloads.

A rollout with steps [10, 100] and a long soak: the first step's member applies (one
download), the two waiting members prefetch (one download each) and have the blob in their
cache while still serving the previous revision; promoted, all three apply it and nginx
sees no further request.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra.artifacts import StaticNginx
from tests.infra.common import wait_until
from tests.infra.etcd import EtcdCluster
from tests.infra.served import doc
from tests.integration.fleet.harness import PREFIX, EtcdView, Fleet

WEIGHTS = os.urandom(3 * 1024 * 1024)
DIGEST = hashlib.sha256(WEIGHTS).hexdigest()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[StaticNginx]:
    server = StaticNginx(tmp_path / "nginx")
    (server.www / "w.bin").write_bytes(WEIGHTS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def downloads(nginx: StaticNginx) -> int:
    return sum(1 for line in nginx.requests() if line.startswith("GET /w.bin 20"))


def test_members_waiting_for_their_step_prefetch_and_their_step_downloads_nothing(
        tmp_path: Path, nginx: StaticNginx) -> None:
    cluster = EtcdCluster(tmp_path / "etcd").start()
    source = {"kind": "etcd", "endpoints": cluster.endpoints, "prefix": PREFIX, "timeout": 2.0,
              "max_backoff": 1.0, "check_interval": 1.0}
    fleet = Fleet(tmp_path / "fleet", source, 3, extra={
        "policy": {"uri_schemes": ["file", "http"]}, "weights": {"attempts": 3}})
    try:
        fleet.start()
        base = fleet.publish(doc(version="v1.0.0"))
        fleet.wait_all_applied(base)
        new = yaml.safe_load(doc(version="v1.1.0"))
        new["model"].update(uri=f"{nginx.url}/w.bin", sha256=DIGEST)
        revision = fleet.publish(yaml.safe_dump(new).encode(), "--rollout",
                                 "{steps: [10, 100], soak: 600}")
        view = EtcdView(cluster.endpoints[0])
        wait_until(lambda: (r := view.record()) is not None and r["history"]
                   and r["history"][0]["healthy_at"], 60, "step 1 healthy")
        first = {m for m, r in fleet.applied().items() if r == revision}
        waiting = set(fleet.members) - first
        assert len(first) == 1 and len(waiting) == 2, fleet.applied()

        def staged(member: str) -> bool:
            blobs = Path(fleet.daemons[member].settings["state_dir"]) / "blobs"
            return any(p.name.endswith(DIGEST) for p in blobs.rglob("*") if p.is_file())

        wait_until(lambda: all(staged(m) for m in waiting), 30, "the waiting members' prefetch")
        assert downloads(nginx) == 3, nginx.requests()
        assert {fleet.applied()[m] for m in waiting} == {base}, "waiting members keep serving"
        for m in waiting:
            assert all(row["revision"] != revision for row in fleet.daemons[m].history("demo"))

        assert fleet.rollout("promote", "demo").returncode == 0
        fleet.wait_all_applied(revision, timeout=60)
        assert downloads(nginx) == 3, "a promoted step must be a cache hit"
        for m, rows in fleet.applied_rows("demo", revision).items():
            assert len(rows) == 1, (m, rows)
    finally:
        fleet.close()
        cluster.stop()
