"""examples/pipelines/github-publish-model.yml run for real against Nacos (the session's
server, auth on, a group of this test's own): its `run:` steps (taken from the YAML) build,
sign, validate, publish with compare-and-swap (the content md5) and wait for a real daemon
watching that group to apply each of two releases; the second builds on the first's md5."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from tests.infra.common import free_port
from tests.infra.daemon import DaemonHarness
from tests.infra.model_server import ModelServer
from tests.infra.nacos_server import NacosServer
from tests.integration.deploy.pipelines import failed, github_steps, run_pipeline, transcript, workspace
from watcher.cli.keygen import write_key_pair


def test_github_workflow_releases_through_nacos(nacos: NacosServer, group: str, tmp_path: Path) -> None:
    server = ModelServer(tmp_path / "server").start()
    key, pub = write_key_pair(tmp_path / "keys", "publisher")
    store = tmp_path / "store"
    store.mkdir()
    api = free_port()
    source = {"kind": "nacos", "server_addresses": [nacos.address], "group": group,
              "username": nacos.username, "password": nacos.password}
    settings = {**server.settings(), "environment": "production", "source": source,
                "trust": {"trusted_keys": [pub.read_text().strip()], "require_signature": True,
                          "allowed_roots": [str(store)]},
                "api": {"enabled": True, "port": api}}
    settings.pop("runtime")
    daemon = DaemonHarness(tmp_path / "daemon", settings).start()
    ws = workspace(tmp_path, os.urandom(4096))
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    context = {  # what GitHub resolves in ${{ }}: the repository's secrets and variables
        "secrets.MW_SIGNING_KEY": key.read_text(), "secrets.MW_SOURCE_PASSWORD": nacos.password,
        "vars.MW_NACOS_ADDRESSES": json.dumps([nacos.address]),
        "vars.MW_TRUSTED_KEYS": json.dumps([pub.read_text().strip()]),
        "vars.MW_STATUS_URLS": f"http://127.0.0.1:{api}/status",
        "vars.MW_ROLLOUT": "",  # every host at once (the fleet variant: test_pipelines.py)
    }
    overrides = {"MODEL_STORE": str(store), "RUNNER_TEMP": str(runner_temp),
                 "MODEL_WATCHER_SOURCE__GROUP": group,
                 "MODEL_WATCHER_SOURCE__USERNAME": nacos.username,
                 "MODEL_WATCHER_TRUST__ALLOWED_ROOTS": json.dumps([str(store)])}
    try:
        revisions = []
        for tag in ("v1.2.0", "v1.2.1-hotfix"):
            steps = github_steps({**context, "github.ref_name": tag})
            results = run_pipeline(steps, ws, overrides)
            assert failed(results) is None, transcript(results)
            assert [n.split("/", 1)[1] for n, _ in results] == [
                "Build", "Sign", "Validate for the target environment",
                "Publish (compare-and-swap)", "Wait for the apply"]
            revisions.append((ws / "dist" / "revision").read_text().strip())
            assert (ws / "dist" / "base-revision").read_text().strip() == (revisions[-2] if len(revisions) > 1 else "0")
            served = httpx.get(server.url + "/config", timeout=5).json()["spec"]
            assert served["version"] == tag
            assert daemon.wait_outcome("qwen-chat", revisions[-1], "applied", timeout=5)["version"] == tag
        assert not list(runner_temp.iterdir()), "the signing key file is removed after use"
    finally:
        daemon.stop()
        server.stop()
