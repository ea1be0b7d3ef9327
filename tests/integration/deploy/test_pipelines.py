"""examples/pipelines/gitlab-ci.yml run for real against etcd: its jobs' scripts (taken from
the YAML) build, sign, validate, publish with compare-and-swap and wait for a real daemon
watching that etcd to apply the release; a publish that lost the race and a -dev version
for production stop the pipeline with the center untouched. (The GitHub Actions workflow
runs against Nacos: tests/integration/nacos/test_pipeline_nacos.py.) With MW_ROLLOUT set,
the same pipeline releases to a fleet of three daemons in steps and its wait job follows the
rollout: it passes once the rollout completed and fails when an operator aborts it."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.infra.common import free_port, wait_until
from tests.infra.daemon import DaemonHarness
from tests.infra.etcd import EtcdCluster
from tests.infra.model_server import ModelServer
from tests.integration.deploy.pipelines import failed, gitlab_steps, run_pipeline, transcript, workspace
from tests.integration.fleet.harness import Fleet
from watcher.cli.keygen import write_key_pair

PREFIX = "/model-watcher/models/"


@dataclass
class Env:
    etcd: EtcdCluster
    server: ModelServer
    daemon: DaemonHarness
    ws: Path
    overrides: dict[str, str]

    def revision(self) -> int:
        data = self.etcd.call("kv/range", {"key": _b64(PREFIX + "qwen-chat")})
        kvs = data.get("kvs") or []
        return int(kvs[0]["mod_revision"]) if kvs else 0  # type: ignore[index]


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    etcd = EtcdCluster(tmp_path / "etcd").start()
    server = ModelServer(tmp_path / "server").start()
    key, pub = write_key_pair(tmp_path / "keys", "publisher")
    store = tmp_path / "store"
    store.mkdir()
    trusted = json.dumps([pub.read_text().strip()])
    api = free_port()
    settings = {**server.settings(), "environment": "production",
                "source": {"kind": "etcd", "endpoints": etcd.endpoints, "prefix": PREFIX},
                "trust": {"trusted_keys": [pub.read_text().strip()], "require_signature": True,
                          "allowed_roots": [str(store)]},
                "api": {"enabled": True, "port": api}}
    settings.pop("runtime")
    daemon = DaemonHarness(tmp_path / "daemon", settings).start()
    ws = workspace(tmp_path, os.urandom(4096))
    overrides = {  # the project's CI/CD variables
        "MODEL_STORE": str(store), "MW_SIGNING_KEY": str(key),
        "MODEL_WATCHER_SOURCE__ENDPOINTS": json.dumps(etcd.endpoints),
        "MODEL_WATCHER_TRUST__TRUSTED_KEYS": trusted,
        "MODEL_WATCHER_TRUST__ALLOWED_ROOTS": json.dumps([str(store)]),
        "MW_STATUS_URLS": f"http://127.0.0.1:{api}/status",
    }
    try:
        yield Env(etcd, server, daemon, ws, overrides)
    finally:
        daemon.stop()
        server.stop()
        etcd.stop()



def test_gitlab_pipeline_releases_through_etcd(env: Env) -> None:
    e = env
    results = run_pipeline(gitlab_steps(), e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.2.0"})
    assert failed(results) is None, transcript(results)
    assert [name for name, _ in results] == ["build", "sign", "validate", "publish", "wait"]
    revision = (e.ws / "dist" / "revision").read_text().strip()
    assert revision == str(e.revision())
    served = httpx.get(e.server.url + "/config", timeout=5).json()["spec"]
    assert served["version"] == "v1.2.0" and served["metadata"]["model_id"] == "qwen-chat-v1.2.0"
    row = e.daemon.wait_outcome("qwen-chat", revision, "applied", timeout=5)
    assert row["version"] == "v1.2.0"

    # a second release builds on that revision: the compare-and-swap holds
    results = run_pipeline(gitlab_steps(), e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.2.1-hotfix"})
    assert failed(results) is None, transcript(results)
    assert httpx.get(e.server.url + "/config", timeout=5).json()["spec"]["version"] == "v1.2.1-hotfix"


def test_gitlab_pipeline_stops_when_it_lost_the_race(env: Env) -> None:
    e = env
    first = run_pipeline(gitlab_steps(), e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.2.0"})
    assert failed(first) is None, transcript(first)
    steps = gitlab_steps()
    built = run_pipeline(steps, e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.3.0"}, stop_after="build")
    assert failed(built) is None, transcript(built)
    # someone else publishes meanwhile (the same document again: a new etcd revision)
    theirs = e.etcd.put(PREFIX + "qwen-chat", (e.ws / "dist" / "qwen-chat.yaml").read_bytes())
    rest = run_pipeline(steps[1:], e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.3.0"})
    assert failed(rest) == "publish", transcript(rest)
    publish = dict(rest)["publish"]
    assert f"at revision {theirs} in etcd" in publish.stderr, publish.stderr
    assert e.revision() == theirs, "the losing publish wrote nothing"
    assert httpx.get(e.server.url + "/config", timeout=5).json()["spec"]["version"] == "v1.2.0"


def test_gitlab_pipeline_refuses_a_dev_version_for_production(env: Env) -> None:
    e = env
    results = run_pipeline(gitlab_steps(), e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.4.0-dev"})
    assert failed(results) == "validate", transcript(results)
    assert "dev" in dict(results)["validate"].stderr
    assert e.revision() == 0, "nothing was published"


# -- the same pipeline releasing to a fleet in steps (MW_ROLLOUT) ---------------------------
@dataclass
class FleetEnv:
    etcd: EtcdCluster
    fleet: Fleet
    ws: Path
    overrides: dict[str, str]


@pytest.fixture
def fleet_env(tmp_path: Path) -> Iterator[FleetEnv]:
    etcd = EtcdCluster(tmp_path / "etcd").start()
    key, pub = write_key_pair(tmp_path / "keys", "publisher")
    store = tmp_path / "store"
    store.mkdir()
    source = {"kind": "etcd", "endpoints": etcd.endpoints, "prefix": PREFIX, "timeout": 2.0,
              "max_backoff": 1.0}
    fleet = Fleet(tmp_path / "fleet", source, 3, runtime=False, extra={
        "environment": "production",
        "trust": {"trusted_keys": [pub.read_text().strip()], "require_signature": True,
                  "allowed_roots": [str(store)]}})
    overrides = {
        "MODEL_STORE": str(store), "MW_SIGNING_KEY": str(key),
        "MODEL_WATCHER_SOURCE__ENDPOINTS": json.dumps(etcd.endpoints),
        "MODEL_WATCHER_TRUST__TRUSTED_KEYS": json.dumps([pub.read_text().strip()]),
        "MODEL_WATCHER_TRUST__ALLOWED_ROOTS": json.dumps([str(store)]),
        "MW_STATUS_URLS": "",
    }
    try:
        fleet.start()
        yield FleetEnv(etcd, fleet, workspace(tmp_path, os.urandom(4096)), overrides)
    finally:
        fleet.close()
        etcd.stop()


def test_gitlab_pipeline_rolls_out_to_a_fleet_and_waits_for_it(fleet_env: FleetEnv) -> None:
    e = fleet_env
    results = run_pipeline(gitlab_steps(), e.ws, {
        **e.overrides, "CI_COMMIT_TAG": "v1.2.0", "MW_ROLLOUT": "{steps: [34, 100], soak: 1}"})
    assert failed(results) is None, transcript(results)
    assert "completed" in dict(results)["wait"].stdout, transcript(results)
    revision = (e.ws / "dist" / "revision").read_text().strip()
    assert e.fleet.applied("qwen-chat") == {m: revision for m in e.fleet.members}
    record = e.fleet.status_json("qwen-chat")
    assert record["phase"] == "completed" and [s["size"] for s in record["progress"]] == [2, 3]
    for m, rows in e.fleet.applied_rows("qwen-chat", revision).items():
        assert len(rows) == 1 and rows[0]["version"] == "v1.2.0", (m, rows)


def test_gitlab_pipeline_fails_when_the_rollout_is_aborted(fleet_env: FleetEnv) -> None:
    e = fleet_env
    first = run_pipeline(gitlab_steps(), e.ws, {**e.overrides, "CI_COMMIT_TAG": "v1.2.0",
                                                 "MW_ROLLOUT": "{steps: [100], soak: 0}"})
    assert failed(first) is None, transcript(first)
    previous = (e.ws / "dist" / "revision").read_text().strip()

    def abort_after_the_first_step() -> None:
        def first_step_healthy() -> bool:
            out = e.fleet.rollout("status", "qwen-chat", "--json")
            if out.returncode != 0:
                return False
            r = json.loads(out.stdout)
            return bool(r["version"] == "v1.3.0" and r["progress"] and r["progress"][0]["healthy_at"])
        wait_until(first_step_healthy, 60, "the first step to be healthy")
        assert e.fleet.rollout("abort", "qwen-chat", "--reason", "bad answers").returncode == 0

    operator = threading.Thread(target=abort_after_the_first_step)
    operator.start()
    results = run_pipeline(gitlab_steps(), e.ws, {
        **e.overrides, "CI_COMMIT_TAG": "v1.3.0", "MW_ROLLOUT": "{steps: [34, 100], soak: 600}"})
    operator.join(70)
    assert failed(results) == "wait", transcript(results)
    assert "bad answers" in dict(results)["wait"].stdout + dict(results)["wait"].stderr
    wait_until(lambda: set(e.fleet.applied("qwen-chat").values()) == {previous}, 60,
               "every member back on the previous release")
