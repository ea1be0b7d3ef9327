"""Hostile documents written straight into a real etcd and into the local directory (bypassing
`publish`), against the real daemon, the example model server and the command runtime.

For each case of cases.py: the revision is `rejected` with the reason `check_document` gives
(the one check `validate` and `publish` run, so all three agree), and a valid document
written right after is applied. Then: nothing is left `pending` (also after a restart, and no
rejected revision is replayed), the daemon's peak RSS (VmHWM) stays within the bound
docs/security.md states, and the model server the command runtime started holds none of the
daemon's own environment.

Cost: 49 cases x (reject + hot swap) per source, about 25 s per source on the standard
machine (with quiescence off; most of it is the harness's 0.1 s polling).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra.common import wait_until
from tests.infra.etcd import EtcdCluster
from tests.infra.served import ServedDaemon
from tests.integration.hostile.cases import NAME, Case, cases, valid
from watcher.cli.validate import check_document
from watcher.core.errors import RejectedError
from watcher.settings import load_settings

#: docs/security.md: the daemon's peak RSS through the hostile suite (measured: 67 MiB, of
#: which ~58 MiB is the idle daemon; before, the alias bomb alone took it past 2 GiB)
PEAK_RSS_MIB = 96
CANARY = "MODEL_CANARY_DAEMON_SECRET"  # the example server reports MODEL_* variables it got


class Hostile(ServedDaemon):
    """One daemon in production on `source`, weights under `root`, and a writer that bypasses publish."""

    def __init__(self, tmp: Path, source: str, etcd: EtcdCluster | None) -> None:
        self.root = tmp / "weights"
        self.root.mkdir(parents=True)
        self.etcd, self.models, self.prefix = etcd, tmp / "models", "/mw-hostile/"
        if source == "etcd":
            assert etcd is not None
            options = {"kind": "etcd", "endpoints": etcd.endpoints, "prefix": self.prefix, "timeout": 2.0}
        else:
            self.models.mkdir()
            options = {"kind": "localdir", "path": str(self.models), "resync_interval": 5}
        super().__init__(tmp, options)
        self.daemon.settings.update({"environment": "production",
                                     "trust": {"allowed_roots": [str(self.root)]},
                                     "reconcile": {"wait_min": 0.0, "wait_max": 0.0, "shutdown_grace": 10.0}})
        self.daemon.write_settings()
        self.daemon.env[CANARY] = "daemon-only-4c1e"
        self.valid_count = 0
        self.rejected: set[str] = set()  # revisions the case tests saw rejected
        self.settings = load_settings(self.daemon.config)  # what validate/publish would load
        self.cases = {c.name: c for c in cases(self.root)}  # built once: some take 0.3 s to dump

    def write(self, content: bytes) -> str:
        """Write the document the way an operator or a CI job with center access would."""
        if self.etcd is not None:
            return str(self.etcd.put(self.prefix + NAME, content))
        tmp = self.models / f".{NAME}.yaml.swp"
        tmp.write_bytes(content)
        tmp.replace(self.models / f"{NAME}.yaml")
        return hashlib.sha256(content).hexdigest()[:16]

    def apply_valid(self, timeout: float = 30) -> str:
        self.valid_count += 1
        revision = self.write(yaml.safe_dump(valid(self.root, self.valid_count)).encode())
        self.daemon.wait_applied(NAME, revision, timeout)
        return revision

    def peak_rss_mib(self) -> float:
        assert self.daemon.proc is not None
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024


@pytest.fixture(scope="module", params=["localdir", "etcd"])
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    etcd = None
    if request.param == "etcd":
        etcd = EtcdCluster(tmp_path_factory.mktemp("hostile-etcd")).start()
    env = Hostile(tmp_path_factory.mktemp(f"hostile-{request.param}"), request.param, etcd)
    try:
        env.daemon.start()
        env.apply_valid()
        yield env
    finally:
        env.close()
        if etcd is not None:
            etcd.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_name" in metafunc.fixturenames:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            metafunc.parametrize("case_name", [c.name for c in cases(Path(d))])


def test_hostile_document_is_rejected_with_the_checks_reason_then_a_valid_one_applies(
        hostile: Hostile, case_name: str) -> None:
    case: Case = hostile.cases[case_name]
    with pytest.raises(RejectedError) as expected:
        check_document(case.content, hostile.settings, key=NAME, verify=True)
    assert case.reason in expected.value.reason

    revision = hostile.write(case.content)
    row = hostile.daemon.wait_outcome(NAME, revision, "rejected")
    hostile.rejected.add(revision)
    assert row["reason"] == expected.value.reason, "daemon and validate/publish disagree"
    assert hostile.served()["version"].startswith("v1.0."), "a rejected document reached the server"
    hostile.apply_valid()


def test_nothing_is_pending_and_nothing_replays_after_a_restart(hostile: Hostile) -> None:
    before = hostile.daemon.history(NAME)
    assert not [r for r in before if r["outcome"] == "pending"]
    assert hostile.rejected <= {r["revision"] for r in before if r["outcome"] == "rejected"}
    hostile.daemon.stop()
    hostile.daemon.start()
    wait_until(lambda: hostile.daemon.status()["daemon"].get("source_up"), 20, "the source to be up")
    revision = hostile.apply_valid()
    after = hostile.daemon.history(NAME)
    assert not [r for r in after if r["outcome"] == "pending"]
    assert [r["revision"] for r in after if r["revision"] not in {x["revision"] for x in before}] == [revision]


def test_the_daemons_peak_memory_stays_within_the_documented_bound(hostile: Hostile) -> None:
    # the restart above began a fresh process: take it through the worst cases once more
    worst = {"alias-bomb", "many-values", "deep-json", "deep-yaml", "too-big"}
    for case in hostile.cases.values():
        if case.name in worst:
            hostile.daemon.wait_outcome(NAME, hostile.write(case.content), "rejected")
    hostile.apply_valid()
    peak = hostile.peak_rss_mib()
    assert peak < PEAK_RSS_MIB, f"VmHWM {peak:.0f} MiB"


def test_the_server_process_gets_none_of_the_daemons_environment(hostile: Hostile) -> None:
    """Before: runtime.env was merged over the daemon's own environment (os.environ)."""
    hostile.valid_count += 1
    flavored = valid(hostile.root, hostile.valid_count)
    flavored["runtime"]["env"]["SERVER_FLAVOR"] = f"large-{hostile.valid_count}"
    revision = hostile.write(yaml.safe_dump(flavored).encode())
    hostile.daemon.wait_applied(NAME, revision)
    config = hostile.server.config()
    assert config["env"]["SERVER_FLAVOR"] == f"large-{hostile.valid_count}", "restarted with the document's env"
    assert CANARY not in config["env"]
    assert config["env"]["MODEL_WATCHER_REVISION"] == revision
