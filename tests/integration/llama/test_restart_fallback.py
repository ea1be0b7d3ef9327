"""Restart fallback for llama-server: a change that needs a new process (here the context
size) is the docker runtime's job, as for any server: a second llama-server container starts
beside the first, passes the health gate (llama-server's /health is 503 until the model is
loaded), nginx moves the traffic and drains, the old container goes. Chat requests through
nginx never fail. Real podman, a private registry, nginx, and a `FROM scratch` image around
the cached llama-server binary (tests/infra/llama_image.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.infra.daemon import DaemonHarness
from tests.infra.images import BuiltImage
from tests.infra.llama import chat_body, chat_tokens
from tests.infra.llama_image import build_and_push
from tests.infra.nginx import Nginx
from tests.infra.podman import PodmanEnv, PodmanService
from tests.infra.registry import Registry
from tests.integration.containers.conftest import (  # noqa: F401 - fixtures used by name
    builder,
    containers_root,
    podman,
    registry,
    runtime_options,
)
from tests.integration.llama.conftest import Tiny
from tests.integration.modelservers.loadloop import LoadLoop
from watcher.cli.keygen import write_key_pair
from watcher.cli.sign import load_private_key, sign_digest
from watcher.sources.localdir import revision_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
NAME = "tiny-ctx"


@pytest.fixture(scope="module")
def llama_image(builder: PodmanEnv, registry: Registry) -> BuiltImage:  # noqa: F811
    return build_and_push(builder, registry)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    ng = Nginx(tmp_path / "nginx", NAME).start()
    yield ng
    ng.stop()


async def test_a_context_size_change_starts_a_second_llama_server_behind_nginx(
        tmp_path: Path, tiny: Tiny, podman: PodmanService, registry: Registry,  # noqa: F811
        nginx: Nginx, llama_image: BuiltImage) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    model = Path(shutil.copy(tiny.a, weights / "a.gguf"))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    private, public = write_key_pair(tmp_path / "keys")
    docs = tmp_path / "docs"
    docs.mkdir()
    daemon = DaemonHarness(tmp_path / "daemon", {
        "environment": "production",
        "source": {"kind": "localdir", "path": str(docs)},
        "runtime": {"kind": "docker", **runtime_options(podman, registry),
                    "binds": [f"{weights}:{weights}:ro"], "start_timeout": 30},
        "router": {"kind": "nginx", **nginx.options()},
        "health": {"period": 0.1, "failure_threshold": 200, "latency_ms": 5000},
        "trust": {"require_signature": True, "trusted_keys": [str(public)],
                  "allowed_roots": [str(weights)]},
    })

    def publish(version: str, ctx_size: int) -> str:
        content = yaml.safe_dump({
            "name": NAME, "version": version,
            "runtime": {"image": llama_image.ref, "args": [
                "--model", str(model), "--ctx-size", str(ctx_size), "--threads", "1",
                "--parallel", "1", "--no-warmup"]},
            "model": {"uri": model.as_uri(), "sha256": digest,
                      "signature": sign_digest(load_private_key(private), digest)},
        }).encode()
        (docs / f"{NAME}.yaml").write_bytes(content)
        return revision_of(content)

    def n_ctx() -> int:
        props = httpx.get(f"{nginx.url}/props", timeout=10).json()
        return int(props["default_generation_settings"]["n_ctx"])

    async def request(client: httpx.AsyncClient) -> tuple[int, ...]:
        try:
            resp = await client.post("/v1/chat/completions", json=chat_body(NAME))
        except (httpx.RemoteProtocolError, httpx.ReadError):
            resp = await client.post("/v1/chat/completions", json=chat_body(NAME))  # see test_daemon_llama
        return chat_tokens(resp)

    try:
        r1 = publish("v1.0.0", 256)
        daemon.start()
        await asyncio.to_thread(daemon.wait_applied, NAME, r1, 120)
        assert n_ctx() == 256
        async with LoadLoop(nginx.url, request, workers=2, max_requests=5_000, max_seconds=120) as loop:
            await loop.wait_for(lambda o: o.total >= 10, 30)
            r2 = publish("v1.1.0", 512)
            await asyncio.to_thread(daemon.wait_applied, NAME, r2, 120)
            n = len(loop.outcomes.values)
            await loop.wait_for(lambda o: len(o.values) >= n + 10, 30)
        print(f"\nllama restart: {loop.outcomes.total} chat completions, "
              f"{len(loop.outcomes.failures)} failed")
        assert loop.outcomes.failures == []
        assert len(loop.outcomes.distinct()) == 1  # same weights, other process
        assert n_ctx() == 512
        row = {r["revision"]: r for r in daemon.history(NAME)}[r2]
        assert row["plan"].startswith("restart [") and row["plan"].endswith("(runtime.args)"), row
        assert podman.containers(f"model-watcher.model={NAME}") == [f"mw-{NAME}-green"]
    finally:
        daemon.stop()
        for name in podman.containers(f"model-watcher.model={NAME}"):
            podman.env.cli("rm", "--force", "--time", "0", name, check=False)
