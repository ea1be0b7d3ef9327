"""The real daemon (subprocess) hot-swapping a real MLServer through `v2-repository`.

Documents are published into a local directory the daemon watches; every document is signed
with a key of the test's own and the daemon requires signatures, so each test also runs
the whole trust path: parse -> policy -> verify -> load.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.daemon import DaemonHarness
from tests.infra.mlserver import IMPLEMENTATION, MLServer, infer_body, prediction
from tests.integration.modelservers.loadloop import LoadLoop
from watcher.cli.keygen import write_key_pair
from watcher.cli.sign import load_private_key, sign_digest

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Env:
    """A models directory, a signing key, weights copies and a daemon on the shared MLServer."""

    def __init__(self, tmp: Path, mlserver: MLServer, trained: tuple[Path, Path], name: str,
                 **settings: Any) -> None:
        self.name, self.mlserver = name, mlserver
        self.models = tmp / "models"
        self.models.mkdir()
        weights = tmp / "weights"
        weights.mkdir()
        # private copies, so that a test may tamper with them
        self.double = Path(shutil.copy(trained[0], weights / "double.joblib"))
        self.triple = Path(shutil.copy(trained[1], weights / "triple.joblib"))
        self.private, self.public = write_key_pair(tmp / "keys")
        self.stranger, _ = write_key_pair(tmp / "keys", name="stranger")
        self.daemon = DaemonHarness(tmp / "daemon", {
            "environment": "production",
            "source": {"kind": "localdir", "path": str(self.models), "resync_interval": 5},
            "target": {"kind": "v2-repository", "url": mlserver.url,
                       "repository": str(mlserver.repository), "ready_timeout": 30},
            "health": {"url": f"{mlserver.url}/v2/models/{{name}}/ready", "latency_ms": 5000,
                       "period": 0.2},
            "reconcile": {"on_delete": "unload"},
            "trust": {"require_signature": True, "trusted_keys": [str(self.public)],
                      "allowed_roots": [str(weights)]},
            **settings,
        })

    def doc(self, version: str, weights: Path, *, key: Path | None = None,
            sha256: str | None = None, signed: bool = True) -> bytes:
        digest = sha256 or hashlib.sha256(weights.read_bytes()).hexdigest()
        model: dict[str, Any] = {"uri": weights.as_uri(), "implementation": IMPLEMENTATION,
                                 "sha256": digest}
        if signed:
            model["signature"] = sign_digest(load_private_key(key or self.private), digest)
        return yaml.safe_dump({
            "name": self.name, "version": version, "model": model,
            "metadata": {"model_id": f"{self.name}-{version}", "training_data_version": "ds-1",
                         "metrics": {"r2": 1.0}, "created_at": "2026-11-28T12:00:00Z"},
        }).encode()

    def publish(self, content: bytes) -> str:
        """Write like an editor (save by rename); the revision is the localdir one."""
        from watcher.sources.localdir import revision_of

        path = self.models / f"{self.name}.yaml"
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)

    def settings_file(self) -> Path:
        return self.mlserver.repository / self.name / "model-settings.json"

    def server_mentions(self) -> int:
        """How often MLServer's log names this model (every load/reload/unload adds lines)."""
        return self.mlserver.log().count(f"model '{self.name}'")

    def infer(self):  # type: ignore[no-untyped-def]
        async def request(client: httpx.AsyncClient) -> float:
            resp = await client.post(f"/v2/models/{self.name}/infer", json=infer_body(1.0))
            return prediction(resp)
        return request


@pytest.fixture
def env(tmp_path: Path, mlserver: MLServer, trained: tuple[Path, Path],
        request: pytest.FixtureRequest) -> Iterator[Env]:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40]
    e = Env(tmp_path, mlserver, trained, name)
    try:
        yield e
    finally:
        e.daemon.stop()
        if e.settings_file().exists():  # leave the shared server clean for the next test
            httpx.post(f"{mlserver.url}/v2/repository/models/{name}/unload", timeout=30)
            shutil.rmtree(e.settings_file().parent)


async def test_published_revision_swaps_predictions_with_zero_failed_requests(env: Env) -> None:
    r1 = env.publish(env.doc("v1.0.0", env.double))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    assert env.mlserver.predict(env.name) == pytest.approx(2.0)
    async with LoadLoop(env.mlserver.url, env.infer(), workers=4, max_requests=20_000,
                        max_seconds=120) as loop:
        await loop.wait_for(lambda o: o.total >= 50, 10)
        r2 = env.publish(env.doc("v1.1.0", env.triple))
        await asyncio.to_thread(env.daemon.wait_applied, env.name, r2, 60)
        n = len(loop.outcomes.values)
        await loop.wait_for(lambda o: len(o.values) >= n + 100, 20)
    outcomes = loop.outcomes
    print(f"\ndaemon swap: {outcomes.total} inference requests, {len(outcomes.failures)} failed")
    assert outcomes.failures == []
    assert [round(v) for v in outcomes.distinct()] == [2, 3]
    assert all(v == pytest.approx(3.0) for _, v in outcomes.values[-50:])
    rows = {r["revision"]: r for r in env.daemon.history(env.name)}
    assert rows[r2]["outcome"] == "applied" and rows[r2]["plan"].startswith("hot (model.")
    assert rows[r2]["version"] == "v1.1.0"


async def test_bad_model_keeps_old_serving_and_fails_the_revision(env: Env, tmp_path: Path) -> None:
    r1 = env.publish(env.doc("v1.0.0", env.double))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    junk = env.double.with_name("junk.joblib")
    junk.write_bytes(b"not a pickle at all")  # verifies fine (signed), but cannot load
    async with LoadLoop(env.mlserver.url, env.infer(), max_requests=10_000,
                        max_seconds=90) as loop:
        r2 = env.publish(env.doc("v1.1.0", junk))
        row = await asyncio.to_thread(env.daemon.wait_outcome, env.name, r2, "failed", 60)
        await loop.wait_for(lambda o: o.total >= 50, 10)
    assert loop.outcomes.failures == []
    assert {round(v) for _, v in loop.outcomes.values} == {2}
    assert f"load {env.name} v1.1.0: status" in row["reason"]
    assert env.daemon.status()["models"][env.name]["applied_revision"] == r1
    assert str(env.double) in env.settings_file().read_text()  # repository still says v1


@pytest.mark.parametrize("case", ["digest-mismatch", "tampered-file", "untrusted-key",
                                  "missing-signature"])
async def test_untrusted_weights_are_rejected_before_the_server_is_touched(
    env: Env, case: str
) -> None:
    r1 = env.publish(env.doc("v1.0.0", env.double))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    before_file, before_log = env.settings_file().read_bytes(), env.server_mentions()
    if case == "digest-mismatch":
        content = env.doc("v1.1.0", env.triple, sha256=hashlib.sha256(b"other").hexdigest())
        reason = "sha256 mismatch"
    elif case == "tampered-file":
        signed = env.doc("v1.1.0", env.triple)  # digest + signature of the genuine file
        with env.triple.open("r+b") as f:
            f.seek(100)
            f.write(b"\xff")
        content, reason = signed, "sha256 mismatch"
    elif case == "untrusted-key":
        content, reason = env.doc("v1.1.0", env.triple, key=env.stranger), "not by any"
    else:
        content, reason = env.doc("v1.1.0", env.triple, signed=False), "signature is missing"
    r2 = env.publish(content)
    row = await asyncio.to_thread(env.daemon.wait_outcome, env.name, r2, "rejected", 60)
    assert reason in row["reason"], row
    assert env.settings_file().read_bytes() == before_file
    assert env.server_mentions() == before_log, "the server must not have been asked anything"
    assert env.mlserver.predict(env.name) == pytest.approx(2.0)
    assert env.daemon.status()["models"][env.name]["applied_revision"] == r1


async def test_deleted_document_unloads_the_model(env: Env) -> None:
    r1 = env.publish(env.doc("v1.0.0", env.triple))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    assert env.mlserver.ready(env.name) == 200
    (env.models / f"{env.name}.yaml").unlink()
    await asyncio.to_thread(env.daemon.wait_outcome, env.name, None, "deleted", 60)
    assert env.mlserver.ready(env.name) == 404
    assert not env.settings_file().exists()


async def test_rollback_reapplies_the_last_stable_weights(env: Env) -> None:
    r1 = env.publish(env.doc("v1.0.0", env.double))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    r2 = env.publish(env.doc("v1.1.0", env.triple))
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r2, 60)
    assert env.mlserver.predict(env.name) == pytest.approx(3.0)
    # a plain downgrade is refused by policy ...
    r_down = env.publish(env.doc("v1.0.1-hotfix", env.double))
    row = await asyncio.to_thread(env.daemon.wait_outcome, env.name, r_down, "rejected", 60)
    assert "lower than the applied" in row["reason"]
    r2 = env.publish(env.doc("v1.1.0", env.triple))  # the document goes back to v1.1.0
    # what the server runs already: a noop, recorded (the last handled revision was r_down)
    await asyncio.to_thread(env.daemon.wait_outcome, env.name, r2, "noop", 60)
    # ... the rollback command puts the last stable revision back, weights and all
    result = await asyncio.to_thread(env.daemon.cli, "rollback", env.name)
    assert result.returncode == 0, result.stderr
    await asyncio.to_thread(env.daemon.wait_applied, env.name, r1, 60)
    assert env.mlserver.predict(env.name) == pytest.approx(2.0)
    # the version registry: per revision its metadata, outcome, and which is stable
    rows = env.daemon.history(env.name)
    assert [(r["revision"], r["outcome"], r["source"]) for r in rows[:2]] == [
        (r1, "rolled_back", "rollback"), (r2, "noop", "localdir")]
    assert not rows[1]["stable"]  # rolled back away from: no rollback target
    assert rows[0]["metadata"]["model_id"] == f"{env.name}-v1.0.0" and rows[0]["stable"]
    assert any(a["action"] == "rolled_back" and a["revision"] == r1
               for a in env.daemon.audit())
    # the rollback sticks: a daemon restart does not re-apply the document still on disk
    await asyncio.to_thread(env.daemon.stop)
    await asyncio.to_thread(env.daemon.start)
    await asyncio.to_thread(env.daemon.wait_ready)
    assert env.daemon.status()["models"][env.name]["applied_revision"] == r1
    assert env.mlserver.predict(env.name) == pytest.approx(2.0)
