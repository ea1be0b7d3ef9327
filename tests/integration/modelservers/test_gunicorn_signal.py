"""gunicorn reloaded by SIGHUP through the `signal` target: new workers, new config, no errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra.gunicorn_app import Gunicorn
from tests.integration.modelservers.loadloop import LoadLoop
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, create
from watcher.targets.signal import SignalTarget

pytestmark = pytest.mark.asyncio(loop_scope="session")


def spec(version: str, temperature: float) -> ModelSpec:
    return ModelSpec.model_validate({"name": "chat", "version": version,
                                     "model": {"uri": f"file:///srv/chat/{version}",
                                               "parameters": {"temperature": temperature}}})


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    config = tmp_path / "chat.json"
    config.write_text(json.dumps(spec("v1.0.0", 0.1).canonical()))
    server = Gunicorn(tmp_path / "gunicorn", config).start()
    try:
        yield server
    finally:
        server.stop()


async def version(client: httpx.AsyncClient) -> tuple[str, int]:
    resp = await client.get("/")
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data["version"], data["pid"]


async def test_sighup_reload_under_load_has_zero_failures(gunicorn: Gunicorn,
                                                          tmp_path: Path) -> None:
    target = create("target", {"kind": "signal", "pidfile": str(gunicorn.pidfile),
                               "spec_file": str(gunicorn.config_file)},
                    PluginContext(state_dir=tmp_path, environment="test"))
    assert isinstance(target, SignalTarget)
    before = {gunicorn.get()["pid"] for _ in range(6)}
    previous = spec("v1.0.0", 0.1)
    async with LoadLoop(gunicorn.url, version, workers=4, max_requests=20_000,
                        max_seconds=90) as loop:
        await loop.wait_for(lambda o: o.total >= 50, 10)
        for i in range(1, 4):
            new = spec(f"v1.{i}.0", 0.1 * (i + 1))
            await target.apply(new, previous)
            # gunicorn acknowledges nothing: wait until answers come from the new config only
            await loop.wait_for(
                lambda o, v=new.version: len(o.values) > 30
                and all(ver == v for _, (ver, _) in o.values[-30:]), 30)
            previous = new
    outcomes = loop.outcomes
    versions = [ver for ver, _ in outcomes.distinct()]
    pids = {pid for _, (_, pid) in outcomes.values}
    print(f"\n{outcomes.total} requests across 3 SIGHUP reloads, {len(outcomes.failures)} failed, "
          f"{len(pids)} distinct worker pids")
    assert outcomes.failures == []
    assert sorted(set(versions)) == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
    after = {gunicorn.get()["pid"] for _ in range(6)}
    assert not before & after  # every worker was replaced
    assert gunicorn.get()["model"]["parameters"] == {"temperature": pytest.approx(0.4)}
