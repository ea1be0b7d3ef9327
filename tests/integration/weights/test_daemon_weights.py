"""The real daemon staging remote weights and hot-swapping them into a real MLServer.

Weights are published the way an operator does: `push-weights` into the private registry,
a file on nginx, an object in s3proxy; documents are signed and signatures required, so the
whole trust path runs: signature -> fetch + digest -> load. The old model serves whenever
anything goes wrong; a rollback needs no network; a daemon killed mid-download resumes.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.artifacts import CutProxy, StaticNginx
from tests.infra.daemon import DaemonHarness
from tests.infra.mlserver import IMPLEMENTATION, MLServer
from tests.infra.registry import Registry
from tests.infra.s3proxy import S3Proxy
from tests.integration.weights.conftest import push_weights, weights_settings
from watcher.cli.keygen import write_key_pair
from watcher.cli.sign import load_private_key, sign_digest
from watcher.sources.localdir import revision_of

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Env:
    def __init__(self, tmp: Path, mlserver: MLServer, name: str, weights: dict[str, Any]) -> None:
        self.tmp, self.mlserver, self.name = tmp, mlserver, name
        self.models = tmp / "models"
        self.models.mkdir()
        self.private, self.public = write_key_pair(tmp / "keys")
        self.stranger, _ = write_key_pair(tmp / "keys", name="stranger")
        self.daemon = DaemonHarness(tmp / "daemon", {
            "environment": "production",
            "source": {"kind": "localdir", "path": str(self.models), "resync_interval": 5},
            "target": {"kind": "v2-repository", "url": mlserver.url,
                       "repository": str(mlserver.repository), "ready_timeout": 30},
            "health": {"url": f"{mlserver.url}/v2/models/{{name}}/ready", "latency_ms": 5000,
                       "period": 0.2},
            "trust": {"require_signature": True, "trusted_keys": [str(self.public)]},
            "weights": weights,
            # plain http is opt-in (policy.uri_schemes); the artifact server here is loopback
            "policy": {"uri_schemes": ["file", "oci", "http", "https", "s3", "gs"]},
        })
        self.cache = Path(self.daemon.settings["state_dir"]) / "blobs"

    def doc(self, version: str, uri: str, digest: str, key: Path | None = None) -> bytes:
        model = {"uri": uri, "implementation": IMPLEMENTATION, "sha256": digest,
                 "signature": sign_digest(load_private_key(key or self.private), digest)}
        return yaml.safe_dump({"name": self.name, "version": version, "model": model}).encode()

    def publish(self, content: bytes) -> str:
        path = self.models / f"{self.name}.yaml"
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)

    def settings_file(self) -> Path:
        return self.mlserver.repository / self.name / "model-settings.json"

    def partials(self) -> list[str]:
        d = self.cache / "partial"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture
def env_for(tmp_path: Path, mlserver: MLServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[Env] = []

    def make(weights: dict[str, Any]) -> Env:
        name = request.node.name.removeprefix("test_").replace("_", "-")[:30].strip("-[]")
        e = Env(tmp_path, mlserver, name.replace("[", "-").replace("]", ""), weights)
        made.append(e)
        return e

    yield make
    for e in made:
        e.daemon.stop()
        if e.settings_file().exists():
            httpx.post(f"{mlserver.url}/v2/repository/models/{e.name}/unload", timeout=30)
            shutil.rmtree(e.settings_file().parent)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_registry_weights_hot_swap_and_roll_back_with_the_registry_stopped(
        env_for: Any, tmp_path: Path, trained: tuple[Path, Path]) -> None:
    registry = Registry(tmp_path / "registry").start()  # its own: this test stops it
    try:
        env: Env = env_for(weights_settings(registry))
        v1 = push_weights(tmp_path, registry, trained[0], "models/regression:v1.0.0")
        v2 = push_weights(tmp_path, registry, trained[1], "models/regression:v1.1.0")
        tag = f"oci://{registry.address}/models/regression"
        r1 = env.publish(env.doc("v1.0.0", f"{tag}:v1.0.0", v1["sha256"]))
        env.daemon.start()
        await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
        assert env.mlserver.predict(env.name) == pytest.approx(2.0)
        r2 = env.publish(env.doc("v1.1.0", v2["uri"], v2["sha256"]))  # pinned by digest
        await asyncio.to_thread(env.daemon.wait_applied, env.name, r2, 60)
        assert env.mlserver.predict(env.name) == pytest.approx(3.0)
        row = next(r for r in env.daemon.history(env.name) if r["revision"] == r2)
        assert row["plan"].startswith("hot (model.")
        # stored and diffed as published; the server was given the cache's path
        assert env.daemon.status()["models"][env.name]["applied_revision"] == r2
        served = env.settings_file().read_text()
        assert str(env.cache / "views" / v2["sha256"]) in served
        status = await asyncio.to_thread(env.daemon.cli, "status", "--json")
        weights = __import__("json").loads(status.stdout)["weights"][env.name]
        assert weights["state"] == "done" and weights["uri"] == v2["uri"]
        registry.stop()
        result = await asyncio.to_thread(env.daemon.cli, "rollback", env.name)
        assert result.returncode == 0, result.stderr
        await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
        assert env.mlserver.predict(env.name) == pytest.approx(2.0)
        assert registry.password not in env.daemon.logs()
    finally:
        registry.stop()


@pytest.mark.parametrize("server", ["nginx", "s3proxy"])
async def test_http_and_s3_weights_are_staged_and_swapped_in(
        env_for: Any, server: str, nginx: StaticNginx, s3: S3Proxy, trained: tuple[Path, Path],
        tmp_path: Path) -> None:
    env: Env = env_for(weights_settings(s3=s3))
    uris = []
    for i, path in enumerate(trained):
        if server == "nginx":
            shutil.copy(path, nginx.www / f"{tmp_path.name}-{i}.joblib")
            uris.append(f"{nginx.url}/{tmp_path.name}-{i}.joblib")
        else:
            s3.put("models", f"{tmp_path.name}/{i}/model.joblib", path.read_bytes())
            uris.append(f"s3://models/{tmp_path.name}/{i}/model.joblib")
    r1 = env.publish(env.doc("v1.0.0", uris[0], sha(trained[0])))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    assert env.mlserver.predict(env.name) == pytest.approx(2.0)
    r2 = env.publish(env.doc("v1.1.0", uris[1], sha(trained[1])))
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r2, 60)
    assert env.mlserver.predict(env.name) == pytest.approx(3.0)
    logs = env.daemon.logs()
    assert s3.secret_key not in logs and "X-Amz-Signature" not in logs


async def test_bad_remote_weights_fail_with_a_reason_and_the_old_model_keeps_serving(
        env_for: Any, nginx: StaticNginx, trained: tuple[Path, Path], tmp_path: Path) -> None:
    env: Env = env_for(weights_settings())
    good = nginx.www / f"{tmp_path.name}-good.joblib"
    shutil.copy(trained[0], good)
    r1 = env.publish(env.doc("v1.0.0", f"{nginx.url}/{good.name}", sha(good)))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    before = env.settings_file().read_bytes()
    triple = nginx.www / f"{tmp_path.name}-triple.joblib"
    shutil.copy(trained[1], triple)
    url, digest = f"{nginx.url}/{triple.name}", sha(triple)
    cases = [
        ("wrong digest", env.doc("v1.1.0", url, hashlib.sha256(b"x").hexdigest()), "rejected", "hashed to"),
        ("wrong signature", env.doc("v1.1.1", url, digest, key=env.stranger), "rejected", "not by any"),
        ("404", env.doc("v1.1.2", url + ".gone", digest), "failed", "HTTP 404"),
        ("401", env.doc("v1.1.3", f"{nginx.url}/private/{triple.name}", digest), "failed", "HTTP 401"),
        ("scheme not admitted", env.doc("v1.1.4", f"ftp://127.0.0.1/{triple.name}", digest),
         "rejected", "scheme 'ftp' is not in policy.uri_schemes"),
        ("admitted, not staged", env.doc("v1.1.5", f"gs://bucket/{triple.name}", digest),
         "rejected", "cannot be checked"),
    ]
    for what, content, outcome, reason in cases:
        rev = env.publish(content)
        row = await asyncio.to_thread(env.daemon.wait_outcome, env.name, rev, outcome, 60)
        assert reason in row["reason"], (what, row["reason"])
        assert env.settings_file().read_bytes() == before, what
        assert env.mlserver.predict(env.name) == pytest.approx(2.0), what
        assert env.partials() == [] and not (env.cache / "sha256" / digest).exists(), what
    assert env.daemon.status()["models"][env.name]["applied_revision"] == r1


async def test_a_daemon_killed_mid_download_resumes_and_applies_once(
        env_for: Any, nginx: StaticNginx, trained: tuple[Path, Path], tmp_path: Path) -> None:
    env: Env = env_for(weights_settings())
    weights = nginx.www / f"{tmp_path.name}-big.joblib"
    data = trained[1].read_bytes()
    weights.write_bytes(data)
    extra = 8_000_000
    # joblib/pickle stops at its STOP opcode, so trailing bytes make a bigger, still loadable file
    with weights.open("ab") as f:
        f.write(b"\0" * extra)
    size = len(data) + extra
    proxy = CutProxy(nginx.port, rate=2_000_000)
    try:
        r1 = env.publish(env.doc("v1.1.0", f"{proxy.url}/{weights.name}", sha(weights)))
        env.daemon.start()
        deadline = time.monotonic() + 30
        while proxy.relayed < size // 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        env.daemon.kill9()
        assert env.partials(), "a partial download is kept for resuming"
        have = (env.cache / "partial" / sha(weights)).stat().st_size
        got = proxy.relayed  # includes what was still in the socket buffers at the kill
        assert 0 < have <= got < size
        proxy.rate = None
        env.daemon.start()
        await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    finally:
        proxy.close()
    assert env.mlserver.predict(env.name) == pytest.approx(3.0)
    assert proxy.relayed - got < size - have + 65536, f"resumed from {have} bytes, not restarted"
    assert env.daemon.count(env.name, r1, "applied") == 1
    assert env.partials() == []
