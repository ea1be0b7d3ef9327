"""The reconciler in-process over the fake server (no real servers): coalescing,
exactly-once, rejections, deletes, connectivity edges, readiness, fault containment,
deadlines, transient retries, operator actions and crash recovery."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from watcher.core.errors import TargetError
from watcher.core.events import Event, EventBus, Kind, Message
from watcher.core.executor import Executor
from watcher.core.outcome import Outcome, Verdict
from watcher.core.reconciler import Reconciler
from watcher.core.recorder import OutcomeBuffer
from watcher.core.state import State
from watcher.fakes.servers import FakeServer, FakeTarget, ScriptedProber
from watcher.settings import Settings
from watcher.sources.base import Change


class Bus(EventBus):
    """An EventBus that remembers every message and wakes `until` on each."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []
        self._new = asyncio.Event()
        self.subscribe(self._keep)

    def _keep(self, m: Message) -> None:
        self.messages.append(m)
        self._new.set()

    def outcomes(self) -> list[Outcome]:
        return [m for m in self.messages if isinstance(m, Outcome)]

    def labels(self) -> list[str]:
        return [o.label for o in self.outcomes()]

    def kinds(self) -> list[Kind]:
        return [m.kind for m in self.messages if isinstance(m, Event)]

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._new.clear()
                await self._new.wait()


def doc(t: float, version: str = "v1.0.0") -> bytes:
    return f"name: m\nversion: {version}\nmodel: {{uri: 'file:///w', parameters: {{t: {t}}}}}\n".encode()


async def make(tmp_path: Path, **reconcile: Any) -> tuple[Reconciler, FakeTarget, Bus]:
    settings = Settings(state_dir=tmp_path, reconcile={"wait_min": 0.05, "wait_max": 0.2,  # type: ignore[arg-type]
                                                       "retry_backoff": 0.01, **reconcile})
    target = FakeTarget(FakeServer())
    bus = Bus()
    rec = Reconciler(settings, State(tmp_path / "s.db"), bus,
                     Executor(settings, target, None, prober=ScriptedProber()), source_name="test")
    await rec.start()
    return rec, target, bus


def applied_t(target: FakeTarget) -> list[str]:
    return [c for c in target.server.calls if c.startswith(("apply", "remove"))]


async def test_a_burst_is_settled_by_the_quiet_window(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path, wait_min=0.3, wait_max=30)
    rec.changed(Change("m", "r0", doc(0.0)))
    for i in range(1, 30):  # each change re-arms the window while the worker waits in it
        await asyncio.sleep(0.005)
        rec.changed(Change("m", f"r{i}", doc(i / 10)))
    assert bus.outcomes() == []
    await rec.idle()
    assert target.server.loaded["m"].model.parameters["t"] == 2.9
    assert [o.revision for o in bus.outcomes()] == ["r29"]


async def test_each_revision_is_acted_on_once_even_after_a_new_reconciler(tmp_path: Path) -> None:
    rec, target, _ = await make(tmp_path)
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await rec.idle()
    rec.changed(Change("m", "r1", doc(0.1)))
    await rec.idle()
    again, target2, _ = await make(tmp_path)
    again.snapshot({"m": Change("m", "r1", doc(0.1))})
    await again.idle()
    assert len(applied_t(target)) == 1 and applied_t(target2) == []


async def test_rejected_revision_leaves_the_target_alone_and_is_not_retried(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path)
    bad = Change("m", "bad", b"name: m\nversion: 1.2\nmodel: {uri: x}\n")
    rec.changed(bad)
    await rec.idle()
    again, _, bus2 = await make(tmp_path)
    again.snapshot({"m": bad})
    await again.idle()
    assert applied_t(target) == [] and bus.labels() == ["rejected"] and bus2.labels() == []
    assert "not semver" in bus.outcomes()[0].reason


async def test_failed_apply_is_recorded_and_the_next_revision_still_applies(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path)
    target.fail = deque([TargetError("server said no")])
    rec.changed(Change("m", "r1", doc(0.1)))
    await rec.idle()
    row = rec.state.last_seen("m")
    assert row is not None and row["outcome"] == "failed" and "server said no" in row["reason"]
    rec.changed(Change("m", "r2", doc(0.2)))
    await rec.idle()
    assert bus.labels() == ["failed", "applied"]


async def test_a_defect_in_an_apply_is_a_failed_revision_and_the_worker_goes_on(
        tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path)
    target.fail = deque([ValueError("embedded null byte")])
    rec.changed(Change("m", "r1", doc(0.1)))
    await rec.idle()
    failed = bus.outcomes()[-1]
    assert failed.verdict is Verdict.FAILED and failed.error == "ValueError"
    assert failed.reason == "internal error: ValueError: embedded null byte"
    assert rec.state.intents() == [] and rec.state.pending() == []
    rec.changed(Change("m", "r2", doc(0.2)))
    await rec.idle()
    assert bus.labels() == ["failed", "applied"]


async def test_an_apply_past_its_deadline_fails_and_frees_the_model(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path, apply_timeout=0.3)
    target.block = asyncio.Event()  # the server never answers
    rec.changed(Change("m", "r1", doc(0.1)))
    await bus.until(lambda: bus.outcomes())
    assert bus.outcomes()[0].reason == "did not finish within reconcile.apply_timeout (0.3s)"
    assert rec.state.pending() == [] and rec.state.intents() == []


async def test_transient_failures_are_retried_within_one_handling(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path, retries=2)
    target.fail = deque([TargetError("reset", transient=True), TargetError("reset", transient=True)])
    rec.changed(Change("m", "r1", doc(0.1)))
    await rec.idle()
    assert bus.labels() == ["applied"] and len(applied_t(target)) == 3
    assert [r["outcome"] for r in rec.state.history("m")] == ["applied"]  # one row
    target.fail = deque([TargetError("reset", transient=True)] * 3)
    rec.changed(Change("m", "r2", doc(0.2)))
    await rec.idle()
    assert bus.labels() == ["applied", "failed"]


async def test_a_key_missing_from_a_snapshot_is_a_delete(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path, on_delete="unload")
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await rec.idle()
    rec.snapshot({})
    await rec.idle()
    assert applied_t(target) == ["apply m v1.0.0", "remove m"]
    assert bus.outcomes()[-1].unloaded and rec.state.applied("m") is None


async def test_a_failed_unload_is_a_failed_outcome(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path, on_delete="unload")
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await rec.idle()
    target.fail = deque([TargetError("unload refused")])
    rec.changed(Change.deletion("m"))
    await rec.idle()
    assert bus.labels() == ["applied", "failed"]
    assert bus.outcomes()[-1].reason == "document deleted; unload failed: unload refused"
    buffer = OutcomeBuffer()
    buffer(bus.outcomes()[-1])
    assert buffer.failed() == [bus.outcomes()[-1]]  # what `once` exits 1 on


async def test_connectivity_is_reported_on_edges_only(tmp_path: Path) -> None:
    rec, _, bus = await make(tmp_path)
    for up in (False, False, False, True, True, False):
        rec.connectivity(up, "x")
    assert [k for k in bus.kinds() if k in (Kind.SOURCE_UP, Kind.SOURCE_DOWN)] == [
        Kind.SOURCE_DOWN, Kind.SOURCE_UP, Kind.SOURCE_DOWN]


async def test_first_reconcile_is_announced_once_after_every_model(tmp_path: Path) -> None:
    rec, _, bus = await make(tmp_path)
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    assert Kind.RECONCILED not in bus.kinds()
    await bus.until(lambda: Kind.RECONCILED in bus.kinds())
    assert bus.labels() == ["applied"]  # READY only after the model was handled
    rec.snapshot({"m": Change("m", "r2", doc(0.2))})
    await rec.idle()
    assert bus.kinds().count(Kind.RECONCILED) == 1


async def test_drain_cancels_work_past_the_grace_and_leaves_the_intent(tmp_path: Path) -> None:
    rec, target, _ = await make(tmp_path)
    target.block = asyncio.Event()
    rec.changed(Change("m", "r1", doc(0.1)))
    await asyncio.sleep(0.3)  # past the quiet window: the apply is blocked inside the target
    assert rec.state.intents() != []
    await asyncio.wait_for(rec.drain(0.05), 2)
    assert [i.revision for i in rec.state.intents()] == ["r1"]  # the next start converges


async def test_drain_lets_the_step_in_flight_finish_within_the_grace(tmp_path: Path) -> None:
    rec, target, bus = await make(tmp_path)
    target.block = asyncio.Event()
    rec.changed(Change("m", "r1", doc(0.1)))
    await asyncio.sleep(0.3)
    asyncio.get_running_loop().call_later(0.1, target.block.set)
    await rec.drain(5)
    assert bus.labels() == ["applied"] and rec.state.intents() == []


async def test_applies_across_models_are_bounded(tmp_path: Path) -> None:
    rec, target, _ = await make(tmp_path, max_parallel=2)
    running = peak = 0
    original = target.apply

    async def counting(spec: Any, previous: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        await original(spec, previous)
        running -= 1

    target.apply = counting  # type: ignore[method-assign]
    for i in range(8):
        rec.changed(Change(f"m{i}", "r1", doc(0.1).replace(b"name: m", f"name: m{i}".encode())))
    await rec.idle()
    assert peak == 2 and len(target.server.loaded) == 8


async def test_restart_outcomes_are_not_update_failures(tmp_path: Path) -> None:
    rec, _, _bus = await make(tmp_path)  # no runtime: a restart cannot be done
    rec.changed(Change("m", "r1", doc(0.1)))
    await rec.idle()
    out = await rec.restart("m", by="alertmanager")
    assert out.verdict is Verdict.FAILED and out.action == "restart" and out.label == "failed"
    assert "no runtime is configured" in out.reason
    assert rec.state.last_seen("m")["outcome"] == "applied"  # type: ignore[index]


async def test_rollback_keeps_every_row_and_unmarks_what_it_left(tmp_path: Path) -> None:
    rec, target, _bus = await make(tmp_path)
    for rev, t, v in (("r1", 0.1, "v1.0.0"), ("r2", 0.2, "v1.1.0")):
        rec.changed(Change("m", rev, doc(t, v)))
        await rec.idle()
    rec.changed(Change("m", "r3", b"name: m\nversion: v1.2.0-dev\nmodel: {uri: x, bogus: 1}\n"))
    await rec.idle()
    out = await rec.rollback("m", by="operator:test")
    assert out.label == "rolled_back" and out.revision == "r1"
    assert target.server.loaded["m"].version == "v1.0.0"
    rows = {r["id"]: r for r in rec.state.history("m")}
    by_rev = {r["revision"]: r for r in reversed(list(rows.values()))}
    assert by_rev["r3"]["outcome"] == "rejected" and "bogus" in by_rev["r3"]["reason"]
    assert by_rev["r2"]["stable"] is False  # rolled back away from: no rollback target
    assert rec.state.last_stable("m", before="r1") is None
    assert rec.state.history("m", limit=1)[0]["outcome"] == "rolled_back"


@pytest.mark.parametrize("interruptions", [0, 2])
async def test_recovery_finishes_rows_left_pending(tmp_path: Path, interruptions: int) -> None:
    state = State(tmp_path / "s.db")
    for _ in range(interruptions):
        row = state.record_seen("m", "r1", source="test")
        state.finish(row, "superseded", "interrupted")
    state.record_seen("m", "r1", source="test")  # the daemon died right after this
    rec, target, bus = await make(tmp_path)
    assert rec.state.pending() == []
    rec.snapshot({"m": Change("m", "r1", doc(0.1))})
    await rec.idle()
    if interruptions == 0:
        assert bus.labels() == ["superseded", "applied"]
    else:  # the third stop on one revision: not tried again, and said so
        assert bus.labels() == ["failed"] and applied_t(target) == []
        assert bus.outcomes()[0].error == "CrashLoop"
