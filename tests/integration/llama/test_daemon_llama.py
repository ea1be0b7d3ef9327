"""The real daemon (subprocess) swapping GGUF weights and LoRA adapters into real
llama-servers in router mode (a pair behind nginx) through the `llama-server` target.

Documents are signed with a key of the test's own and the daemon requires signatures, so each
test runs the whole path: parse -> policy -> verify -> stage -> candidate -> switch. Answers
are identified by token ids (temperature 0) against the session's reference server.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.daemon import DaemonHarness
from tests.infra.llama import RouterPair, chat_body, chat_tokens
from tests.integration.llama.conftest import Reference, Tiny
from tests.integration.modelservers.loadloop import LoadLoop
from watcher.cli.keygen import write_key_pair
from watcher.cli.sign import load_private_key, sign_digest
from watcher.sources.localdir import revision_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
NAME = "tiny-chat"


class Env:
    """Signed documents in a watched directory, a daemon, and the test's router pair."""

    def __init__(self, tmp: Path, pair: RouterPair, tiny: Tiny) -> None:
        self.pair = pair
        self.docs = tmp / "docs"
        self.docs.mkdir()
        self.weights = tmp / "weights"  # private copies: a test may tamper with them
        self.weights.mkdir()
        for f in (tiny.a, tiny.b, tiny.lora, tiny.corrupt):
            shutil.copy(f, self.weights / f.name)
        self.private, public = write_key_pair(tmp / "keys")
        self.resent = 0
        self.daemon = DaemonHarness(tmp / "daemon", {
            "environment": "production",
            "source": {"kind": "localdir", "path": str(self.docs), "resync_interval": 5},
            "target": {**pair.target_options(), "load_timeout": 60},
            "health": {"url": f"{pair.url}/health", "latency_ms": 5000, "period": 0.2},
            "reconcile": {"on_delete": "unload"},
            "trust": {"require_signature": True, "trusted_keys": [str(public)],
                      "allowed_roots": [str(self.weights)]},
        })

    def file(self, name: str) -> Path:
        return self.weights / name

    def doc(self, version: str, weights: str, *, adapters: dict[str, float] | None = None,
            sha256: str | None = None) -> bytes:
        path = self.file(weights)
        digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
        model: dict[str, Any] = {"uri": path.as_uri(), "sha256": digest,
                                 "signature": sign_digest(load_private_key(self.private), digest)}
        if adapters:
            lora = self.file("lora.gguf")
            model["adapters"] = [{"name": n, "uri": lora.as_uri(),
                                  "sha256": hashlib.sha256(lora.read_bytes()).hexdigest()}
                                 for n in adapters]
            model["parameters"] = {"adapter_scales": adapters}
        return yaml.safe_dump({"name": NAME, "version": version, "model": model}).encode()

    def publish(self, content: bytes) -> str:
        path = self.docs / f"{NAME}.yaml"
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)

    async def applied(self, revision: str) -> None:
        await asyncio.to_thread(self.daemon.wait_applied, NAME, revision, 90)

    async def outcome(self, revision: str, outcome: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.daemon.wait_outcome, NAME, revision, outcome, 90)

    def chat_loop(self, max_seconds: float = 90) -> LoadLoop[tuple[int, ...]]:
        """Chat completions through nginx, 2 at a time, bounded; answers are token ids."""
        async def request(client: httpx.AsyncClient) -> tuple[int, ...]:
            try:
                resp = await client.post("/v1/chat/completions", json=chat_body(NAME))
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # nginx closes idle keep-alive connections of its old workers on reload; a
                # request that met one got no answer at all and is sent again, once (as HTTP
                # clients do, RFC 9112 9.3.1). Counted, so a test sees how often.
                self.resent += 1
                resp = await client.post("/v1/chat/completions", json=chat_body(NAME))
            return chat_tokens(resp)
        return LoadLoop(self.pair.url, request, workers=2, max_requests=5_000,
                        max_seconds=max_seconds)


@pytest.fixture
def env(tmp_path: Path, pair: RouterPair, tiny: Tiny) -> Any:
    e = Env(tmp_path, pair, tiny)
    try:
        yield e
    finally:
        e.daemon.stop()


async def test_publish_swaps_weights_with_zero_failed_chat_requests(env: Env, reference: Reference) -> None:
    r1 = env.publish(env.doc("v1.0.0", "a.gguf"))
    env.daemon.start()
    await env.applied(r1)
    assert env.pair.tokens(NAME) == reference.a
    chat_a = env.pair.chat(NAME)
    first = env.pair.active()
    async with env.chat_loop() as loop:
        await loop.wait_for(lambda o: o.total >= 20, 30)
        r2 = env.publish(env.doc("v1.1.0", "b.gguf"))
        await env.applied(r2)
        n = len(loop.outcomes.values)
        await loop.wait_for(lambda o: len(o.values) >= n + 20, 30)
    outcomes = loop.outcomes
    print(f"\nllama swap: {outcomes.total} chat completions, {len(outcomes.failures)} failed, "
          f"{env.resent} re-sent after a keep-alive close")
    assert outcomes.failures == []
    assert outcomes.distinct()[0] == chat_a and len(outcomes.distinct()) == 2
    assert all(v == outcomes.distinct()[1] for _, v in outcomes.values[-10:])
    assert env.pair.tokens(NAME) == reference.b
    # the other router serves now; the old one has nothing loaded; the new file sits under a
    # new name next to the old one (kept for a rollback)
    assert env.pair.active() is not first
    assert env.pair.active().loaded() == {NAME} and first.loaded() == set()
    assert len(list((env.pair.models_dir / NAME).glob("model-*.gguf"))) == 2
    row = {r["revision"]: r for r in env.daemon.history(NAME)}[r2]
    assert row["outcome"] == "applied" and row["plan"].startswith("hot (model.")


@pytest.mark.parametrize("case", ["corrupt-gguf", "not-gguf"])
async def test_a_file_that_cannot_load_keeps_the_old_model_serving(env: Env, reference: Reference,
                                                                   case: str) -> None:
    r1 = env.publish(env.doc("v1.0.0", "a.gguf"))
    env.daemon.start()
    await env.applied(r1)
    serving = env.pair.active()
    if case == "not-gguf":
        env.file("junk.gguf").write_bytes(b"this is not a model at all\n" * 100)
    bad = "corrupt.gguf" if case == "corrupt-gguf" else "junk.gguf"
    async with env.chat_loop() as loop:
        r2 = env.publish(env.doc("v1.1.0", bad))  # signed, digest right: passes verification
        row = await env.outcome(r2, "failed")
        await loop.wait_for(lambda o: o.total >= 20, 30)
    assert loop.outcomes.failures == []
    assert len(loop.outcomes.distinct()) == 1
    assert env.pair.tokens(NAME) == reference.a
    reason = "could not load it" if case == "corrupt-gguf" else "not a GGUF file"
    assert reason in row["reason"], row
    assert env.daemon.status()["models"][NAME]["applied_revision"] == r1
    assert env.pair.active() is serving  # nginx never moved
    assert env.pair.loaded() == {"blue": {NAME}, "green": set()} or \
        env.pair.loaded() == {"blue": set(), "green": {NAME}}
    assert len(list((env.pair.models_dir / NAME).glob("*.gguf"))) == 1


async def test_a_digest_mismatch_is_rejected_before_any_server_is_touched(
        env: Env, reference: Reference) -> None:
    r1 = env.publish(env.doc("v1.0.0", "a.gguf"))
    env.daemon.start()
    await env.applied(r1)
    presets = [r.preset.read_bytes() for r in (env.pair.blue, env.pair.green)]
    logs = [len(r.log()) for r in (env.pair.blue, env.pair.green)]
    r2 = env.publish(env.doc("v1.1.0", "b.gguf", sha256=hashlib.sha256(b"other").hexdigest()))
    row = await env.outcome(r2, "rejected")
    assert "sha256 mismatch" in row["reason"], row
    assert [r.preset.read_bytes() for r in (env.pair.blue, env.pair.green)] == presets
    for router, size in zip((env.pair.blue, env.pair.green), logs, strict=True):
        assert "reload" not in router.log()[size:] and "spawning" not in router.log()[size:]
    assert env.pair.tokens(NAME) == reference.a
    assert len(list((env.pair.models_dir / NAME).glob("*.gguf"))) == 1  # nothing staged


async def test_adapter_added_rescaled_and_removed(env: Env, reference: Reference) -> None:
    r1 = env.publish(env.doc("v1.0.0", "a.gguf"))
    env.daemon.start()
    await env.applied(r1)
    async with env.chat_loop(max_seconds=120) as loop:
        for version, adapters, expected in [("v1.1.0", {"tone": 1.0}, reference.a_lora),
                                            ("v1.2.0", {"tone": -1.0}, reference.a_lora_neg),
                                            ("v1.3.0", None, reference.a)]:
            rev = env.publish(env.doc(version, "a.gguf", adapters=adapters))
            await env.applied(rev)
            assert env.pair.tokens(NAME) == expected, version
            n = len(loop.outcomes.values)
            await loop.wait_for(lambda o, n=n: len(o.values) >= n + 5, 30)
    print(f"\nllama adapters: {loop.outcomes.total} chat completions, "
          f"{len(loop.outcomes.failures)} failed, {env.resent} re-sent after a keep-alive close")
    assert loop.outcomes.failures == []
    # base, then +adapter, then re-scaled, then base again at the end (answers of the old
    # router may still complete just after the switch, so only first appearances are ordered)
    seen = loop.outcomes.distinct()
    assert len(seen) == 3, seen
    assert all(v == seen[0] for _, v in loop.outcomes.values[-3:])
    for router in (env.pair.blue, env.pair.green):
        assert "lora" not in router.preset.read_text()


async def test_deleting_the_document_unloads_the_model(env: Env) -> None:
    r1 = env.publish(env.doc("v1.0.0", "b.gguf"))
    env.daemon.start()
    await env.applied(r1)
    assert env.pair.active().status(NAME) == "loaded"
    (env.docs / f"{NAME}.yaml").unlink()
    await env.outcome(None, "deleted")  # type: ignore[arg-type]
    for router in (env.pair.blue, env.pair.green):
        assert NAME not in router.models()
    assert not (env.pair.models_dir / NAME).exists()
    resp = httpx.post(f"{env.pair.url}/v1/chat/completions", json=chat_body(NAME), timeout=10)
    assert resp.status_code == 400 and "not found" in resp.text
