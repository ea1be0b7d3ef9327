"""The real daemon (subprocess) with `runtime.kind = "docker"`: documents published into a
watched directory are pulled from the private registry and replaced blue/green behind nginx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.common import wait_until
from tests.infra.daemon import DaemonHarness
from tests.infra.engine_api import EngineAPI
from tests.infra.images import BuiltImage
from tests.infra.nginx import LoadLoop, Nginx
from tests.infra.receiver import Receiver
from tests.infra.registry import Registry
from tests.integration.containers.conftest import PODMAN_ONLY, runtime_options
from watcher.routers.nginx import read_weights
from watcher.sources.localdir import revision_of


class Env:
    def __init__(self, tmp: Path, model: str, engine: EngineAPI, registry: Registry,
                 nginx: Nginx, images: dict[str, BuiltImage], **router: Any) -> None:
        self.model, self.images, self.nginx, self.engine = model, images, nginx, engine
        self.models = tmp / "models"
        self.models.mkdir()
        self.rx = Receiver().__enter__()
        self.daemon = DaemonHarness(tmp / "daemon", {
            "source": {"kind": "localdir", "path": str(self.models)},
            "runtime": {"kind": "docker", **runtime_options(engine, registry)},
            "router": {"kind": "nginx", **nginx.options(), **router},
            "health": {"period": 0.1, "failure_threshold": 20, "latency_ms": 2000},
            "alerts": {
                "notifiers": {"hook": {"kind": "webhook", "url": f"{self.rx.base}/hook"}},
                "rules": [{"name": "update-failed", "condition": "update_failed", "threshold": 1,
                           "notify": ["hook"], "cooldown": 600}],
            },
        })

    def publish(self, tag: str) -> str:
        content = yaml.safe_dump({
            "name": self.model, "version": tag,
            "runtime": {"image": self.images[tag].ref},
            "model": {"uri": f"file:///srv/models/{self.model}/{tag}"},
        }).encode()
        path = self.models / f"{self.model}.yaml"
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)

    def containers(self) -> list[str]:
        return self.engine.containers(f"model-watcher.model={self.model}")

    def serving(self) -> str:
        return httpx.get(self.nginx.url + "/version", timeout=2).text.strip()

    def close(self) -> None:
        self.daemon.stop()
        self.rx.__exit__(None, None, None)


@pytest.fixture
def env(tmp_path: Path, model: str, engine: EngineAPI, registry: Registry, nginx: Nginx,
        images: dict[str, BuiltImage], make_runtime: Any) -> Iterator[Env]:
    # make_runtime: only for its teardown, which removes this model's containers
    e = Env(tmp_path, model, engine, registry, nginx, images)
    try:
        yield e
    finally:
        e.close()


async def _wait(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_daemon_replaces_blue_green_with_zero_failed_requests(env: Env) -> None:
    r1 = env.publish("v1.0.0")
    env.daemon.start()
    await _wait(env.daemon.wait_applied, env.model, r1, 60)
    assert env.serving() == "v1.0.0"
    with LoadLoop(env.nginx.url + "/version") as load:
        r2 = env.publish("v1.1.0")
        await _wait(env.daemon.wait_applied, env.model, r2, 60)
        await asyncio.sleep(0.3)
    print(f"daemon blue/green: {load.result.summary()}")
    assert load.result.failed == 0, load.result.errors
    assert set(load.result.bodies) == {"v1.0.0", "v1.1.0"}
    assert env.containers() == [f"mw-{env.model}-green"]
    row = env.daemon.wait_outcome(env.model, r2, "applied")
    assert "@sha256:" in row["plan"], row["plan"]  # history names the pinned image that runs


@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)
async def test_daemon_failed_gate_keeps_old_marks_failed_and_alerts(env: Env) -> None:
    r1 = env.publish("v1.0.0")
    env.daemon.start()
    await _wait(env.daemon.wait_applied, env.model, r1, 60)
    with LoadLoop(env.nginx.url + "/version") as load:
        r2 = env.publish("v1.2.0")  # /health answers 404
        row = await _wait(env.daemon.wait_outcome, env.model, r2, "failed", 60)
        await asyncio.sleep(0.3)
    assert load.result.failed == 0, load.result.errors
    assert set(load.result.bodies) == {"v1.0.0"}
    assert "health" in (row.get("reason") or "")
    assert env.daemon.status()["models"][env.model]["applied_revision"] == r1
    assert env.containers() == [f"mw-{env.model}-blue"]
    wait_until(lambda: env.rx.at("/hook"), 20, "the update-failed alert")
    assert env.model in env.rx.at("/hook")[0].body.decode()


@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)
async def test_daemon_killed_mid_promote_converges_after_restart(
    tmp_path: Path, model: str, engine: EngineAPI, registry: Registry, nginx: Nginx,
    images: dict[str, BuiltImage], make_runtime: Any,
) -> None:
    e = Env(tmp_path, model, engine, registry, nginx, images, steps=[50, 100], hold=30)
    try:
        r1 = e.publish("v1.0.0")
        e.daemon.start()
        await _wait(e.daemon.wait_applied, model, r1, 60)
        with LoadLoop(nginx.url + "/version", max_seconds=150) as load:
            r2 = e.publish("v1.1.0")
            await _wait(wait_until, lambda: 50 in read_weights(nginx.upstream_file).values(), 60,
                        "the 50% step")
            e.daemon.kill9()
            assert sorted(e.containers()) == [f"mw-{model}-blue", f"mw-{model}-green"]
            e.daemon.settings["router"].update(hold=0)
            e.daemon.write_settings()
            e.daemon.start()
            await _wait(e.daemon.wait_applied, model, r2, 90)
            await asyncio.sleep(0.3)
        print(f"kill -9 mid-promote: {load.result.summary()}")
        assert load.result.failed == 0, load.result.errors
        assert e.containers() == [f"mw-{model}-green"]  # the new one was kept: resumed
        assert e.serving() == "v1.1.0"
        assert list(read_weights(nginx.upstream_file).values()) == [100]
        row = e.daemon.wait_outcome(model, r2, "applied")
        assert row["reason"] == "resumed after a stop of the daemon", [
            (r["id"], r["revision"], r["outcome"], r["reason"]) for r in e.daemon.history(model)]
        assert e.daemon.count(model, r2) == 1, "the revision was handled once"
    finally:
        e.close()


@pytest.mark.parametrize("engine", PODMAN_ONLY, indirect=True)
async def test_rollback_command_reruns_the_previous_digest_blue_green(env: Env) -> None:
    r1 = env.publish("v1.0.0")
    env.daemon.start()
    await _wait(env.daemon.wait_applied, env.model, r1, 60)
    r2 = env.publish("v1.1.0")
    await _wait(env.daemon.wait_applied, env.model, r2, 60)
    with LoadLoop(env.nginx.url + "/version") as load:
        done = await _wait(env.daemon.cli, "rollback", env.model)
        assert done.returncode == 0, done.stderr
        await asyncio.sleep(0.3)
    assert load.result.failed == 0, load.result.errors
    assert env.serving() == "v1.0.0"
    digest = env.images["v1.0.0"].digest
    [name] = env.containers()
    assert env.engine.inspect(name)["Config"]["Labels"]["model-watcher.image"].endswith(
        f"@{digest}")


def test_pull_command_prints_the_digest_and_a_progress_bar(env: Env) -> None:
    doc = env.models.parent / "pull.yaml"
    doc.write_text(yaml.safe_dump({"name": env.model, "version": "v1.1.0",
                                   "runtime": {"image": env.images["v1.1.0"].ref},
                                   "model": {"uri": "file:///srv/models/x"}}))
    out = env.daemon.cli("pull", str(doc))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("@" + env.images["v1.1.0"].digest)
    assert "[" in out.stderr and "%" in out.stderr
    missing = doc.with_name("missing.yaml")
    missing.write_text(doc.read_text().replace(":v1.1.0", ":v0.0.404"))
    out = env.daemon.cli("pull", str(missing))
    assert out.returncode == 1
    assert "manifest unknown" in out.stderr
