"""The reconciler in-process with a recording target (no servers): coalescing, exactly-once,
rejections, deletes, connectivity edges."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from watcher.core.errors import TargetError
from watcher.core.events import EventBus, Kind
from watcher.core.executor import Executor
from watcher.core.reconciler import Reconciler
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.settings import Settings
from watcher.sources.base import Change


class RecordingTarget:
    hot_paths = ("model.",)

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.fail_next = False

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        if self.fail_next:
            self.fail_next = False
            raise TargetError("server said no")
        self.applied.append(str(spec.model.parameters["t"]))

    async def remove(self, name: str) -> None:
        self.applied.append("removed")

    async def aclose(self) -> None:
        pass


def doc(t: float, version: str = "v1.0.0") -> bytes:
    return f"name: m\nversion: {version}\nmodel: {{uri: 'file:///w', parameters: {{t: {t}}}}}\n".encode()


def make(tmp_path: Path, **reconcile: object) -> tuple[Reconciler, RecordingTarget, list[Kind]]:
    settings = Settings(state_dir=tmp_path, reconcile={"wait_min": 0.05, "wait_max": 0.2, **reconcile})  # type: ignore[arg-type]
    target = RecordingTarget()
    bus = EventBus()
    kinds: list[Kind] = []
    bus.subscribe(lambda e: kinds.append(e.kind))
    rec = Reconciler(settings, State(tmp_path / "s.db"), bus, Executor(settings, target, None), source_name="test")
    rec.bind(asyncio.get_running_loop())
    return rec, target, kinds


async def test_burst_is_coalesced_to_the_last_revision(tmp_path: Path) -> None:
    rec, target, _ = make(tmp_path)
    for i in range(50):
        rec.changed(Change("m", f"r{i}", doc(i / 10)))
    await asyncio.sleep(0)
    await rec.idle()
    assert target.applied == ["4.9"]
    assert rec.state.applied("m").revision == "r49"  # type: ignore[union-attr]


async def test_each_revision_is_acted_on_once_even_after_a_new_reconciler(tmp_path: Path) -> None:
    rec, target, _ = make(tmp_path)
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await asyncio.sleep(0)
    await rec.idle()
    rec.changed(Change("m", "r1", doc(0.1)))
    await rec.idle()
    again, target2, _ = make(tmp_path)
    again.snapshot({"m": Change("m", "r1", doc(0.1))})
    await asyncio.sleep(0)
    await again.idle()
    assert target.applied == ["0.1"] and target2.applied == []


async def test_rejected_revision_leaves_the_target_alone_and_is_not_retried(tmp_path: Path) -> None:
    rec, target, kinds = make(tmp_path)
    rec.changed(Change("m", "bad", b"name: m\nversion: 1.2\nmodel: {uri: x}\n"))
    await asyncio.sleep(0)
    await rec.idle()
    rec.snapshot({"m": Change("m", "bad", b"name: m\nversion: 1.2\nmodel: {uri: x}\n")})
    await asyncio.sleep(0)
    await rec.idle()
    assert target.applied == [] and kinds.count(Kind.REJECTED) == 1


async def test_failed_apply_is_recorded_and_the_next_revision_still_applies(tmp_path: Path) -> None:
    rec, target, kinds = make(tmp_path)
    target.fail_next = True
    rec.changed(Change("m", "r1", doc(0.1)))
    await asyncio.sleep(0)
    await rec.idle()
    assert rec.state.last_seen("m")["outcome"] == "failed"  # type: ignore[index]
    assert "server said no" in rec.state.last_seen("m")["reason"]  # type: ignore[index]
    rec.changed(Change("m", "r2", doc(0.2)))
    await asyncio.sleep(0)
    await rec.idle()
    assert target.applied == ["0.2"] and Kind.FAILED in kinds


async def test_a_key_missing_from_a_snapshot_is_a_delete(tmp_path: Path) -> None:
    rec, target, kinds = make(tmp_path, on_delete="unload")
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await asyncio.sleep(0)
    await rec.idle()
    rec.snapshot({})
    await asyncio.sleep(0)
    await rec.idle()
    assert target.applied == ["0.1", "removed"] and Kind.DELETED in kinds
    assert rec.state.applied("m") is None


async def test_connectivity_is_reported_on_edges_only(tmp_path: Path) -> None:
    rec, _, kinds = make(tmp_path)
    for up in (False, False, False, True, True, False):
        rec.connectivity(up, "x")
    assert [k for k in kinds if k in (Kind.SOURCE_UP, Kind.SOURCE_DOWN)] == [
        Kind.SOURCE_DOWN, Kind.SOURCE_UP, Kind.SOURCE_DOWN]


async def test_first_reconcile_is_announced_once(tmp_path: Path) -> None:
    rec, _, kinds = make(tmp_path)
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await asyncio.sleep(0)
    await rec.idle()
    rec.snapshot({"m": Change("m", "r2", doc(0.2))})
    await asyncio.sleep(0)
    await rec.idle()
    assert kinds.count(Kind.RECONCILED) == 1
    assert kinds.index(Kind.RECONCILED) > kinds.index(Kind.APPLIED)


@pytest.mark.parametrize("grace", [0.0])
async def test_drain_cancels_work_past_the_grace(tmp_path: Path, grace: float) -> None:
    rec, target, _ = make(tmp_path, wait_min=5, wait_max=5)
    rec.changed(Change("m", "r1", doc(0.1)))
    await asyncio.sleep(0)
    await rec.drain(grace)
    assert target.applied == []


async def test_applies_across_models_are_bounded(tmp_path: Path) -> None:
    rec, target, _ = make(tmp_path, max_parallel=3, wait_min=0, wait_max=0)
    running = peak = 0
    orig = target.apply

    async def slow_apply(spec: ModelSpec, previous: ModelSpec | None) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        await orig(spec, previous)
        running -= 1

    target.apply = slow_apply  # type: ignore[method-assign]
    for i in range(20):
        rec.changed(Change(f"m{i}", "r1", doc(0.1).replace(b"name: m", f"name: m{i}".encode())))
    await asyncio.sleep(0)
    await rec.idle()
    assert len(target.applied) == 20 and peak == 3
