"""docs/extending.md, followed: out-of-tree plug-ins named by "module:Class" kinds (the
examples/plugins/ source and target written from the how-to, the in-tree fakes as runtime
and router) are built from settings, checked against their contracts, and run the way the
daemon runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from watcher.assembly import build
from watcher.core.errors import PluginError
from watcher.core.events import EventBus
from watcher.core.recorder import OutcomeBuffer
from watcher.core.state import State
from watcher.fakes.servers import FakeRouter, FakeRuntime
from watcher.settings import Settings
from watcher.sources.session import SourceSession


def doc(name: str, t: float, image: str | None = None) -> str:
    runtime = {"image": image} if image else {}
    return json.dumps({"name": name, "version": "v1.0.0", "runtime": runtime,
                       "model": {"uri": "file:///w", "parameters": {"t": t}}})


async def test_a_source_target_runtime_and_router_from_outside_the_tree(tmp_path: Path) -> None:
    bundle, served = tmp_path / "bundle.json", tmp_path / "served"
    served.mkdir()
    bundle.write_text(json.dumps({"a": doc("a", 0.1)}))
    settings = Settings(
        state_dir=tmp_path / "state",
        source={"kind": "examples.plugins.bundle_source:BundleSource", "path": str(bundle),  # type: ignore[arg-type]
                "poll_interval": 0.05},
        target={"kind": "examples.plugins.directory_target:DirectoryTarget", "path": str(served)},  # type: ignore[arg-type]
        runtime={"kind": "watcher.fakes.servers:FakeRuntime"},  # type: ignore[arg-type]
        router={"kind": "watcher.fakes.servers:FakeRouter", "steps": [50, 100]},  # type: ignore[arg-type]
        reconcile={"wait_min": 0.01, "wait_max": 0.05, "on_delete": "unload"})  # type: ignore[arg-type]
    bus, buffer = EventBus(), OutcomeBuffer()
    bus.subscribe(buffer)
    parts = build(settings, State(tmp_path / "state.db"), bus)
    assert isinstance(parts.executor.runtime, FakeRuntime)
    assert isinstance(parts.executor.router, FakeRouter)

    async def until(pred: object) -> None:
        async with asyncio.timeout(10):
            while not pred():  # type: ignore[operator]
                await asyncio.sleep(0.02)

    await parts.reconciler.start()
    session = SourceSession(parts.source, parts.reconciler)
    task = asyncio.create_task(session.run())
    try:
        await until(lambda: (served / "a.json").exists())  # a hot swap into the directory
        bundle.write_text(json.dumps({"a": doc("a", 0.1, image="img:2"), "b": doc("b", 0.3)}))
        await until(lambda: len([o for o in buffer.outcomes if o.label == "applied"]) == 3)
        runtime, router = parts.executor.runtime, parts.executor.router
        assert runtime.serving("a") == ["v1.0.0"]  # a restart-class change: a new instance
        bundle.write_text(json.dumps({"b": doc("b", 0.3)}))
        await until(lambda: not (served / "a.json").exists())  # deleted: unloaded
        assert json.loads((served / "b.json").read_text())["parameters"] == {"t": 0.3}
        assert [o.label for o in buffer.outcomes] == ["applied", "applied", "applied", "deleted"]
        assert router.plan.steps == [50, 100]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await parts.reconciler.drain(1)
        await parts.aclose()


def test_a_class_that_misses_a_method_is_refused_at_start(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, target={  # type: ignore[arg-type]
        "kind": "examples.plugins.bundle_source:BundleSource", "path": str(tmp_path / "b")})
    with pytest.raises(PluginError, match=r"does not implement the Target contract \(missing: "
                                          r"apply, hot_paths, remove\)"):
        build(settings, State(tmp_path / "state.db"), EventBus())
