"""The two seams the fleet plugs into (core/gates.py), driven through the real reconciler
and executor over the fake server: a waiting revision is neither applied nor handled (so it
is asked about again, also after a restart) and is applied exactly once when admitted; a
refused one is recorded rejected once; a restart runs inside the restart slot."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from watcher.core.errors import ApplyError
from watcher.core.events import EventBus
from watcher.core.executor import Executor
from watcher.core.gates import ADMIT, Decision, Gates
from watcher.core.outcome import Outcome, Verdict
from watcher.core.reconciler import Reconciler
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.fakes.servers import FakeRuntime, FakeServer, FakeTarget, ScriptedProber
from watcher.settings import Settings
from watcher.sources.base import Change


class Scripted:
    """An Admission answering per revision (admit unless told otherwise)."""

    def __init__(self) -> None:
        self.answers: dict[str, Decision] = {}
        self.asked: list[str] = []

    def check(self, change: Change) -> Decision:
        self.asked.append(change.revision)
        return self.answers.get(change.revision, ADMIT)


def doc(version: str) -> bytes:
    return f"name: m\nversion: {version}\nmodel: {{uri: 'file:///w', parameters: {{v: '{version}'}}}}\n".encode()


async def make(tmp_path: Path, gates: Gates,
               settings: Settings | None = None) -> tuple[Reconciler, FakeTarget, list[Outcome]]:
    settings = settings or Settings(state_dir=tmp_path, reconcile={"wait_min": 0.0, "wait_max": 0.0})
    target = FakeTarget(FakeServer())
    bus = EventBus()
    outcomes: list[Outcome] = []
    bus.subscribe(lambda m: outcomes.append(m) if isinstance(m, Outcome) else None)
    rec = Reconciler(settings, State(tmp_path / "s.db"), bus,
                     Executor(settings, target, None, prober=ScriptedProber()), source_name="test",
                     gates=gates)
    await rec.start()
    return rec, target, outcomes


def rows(rec: Reconciler, revision: str) -> list[str]:
    return [r["outcome"] for r in rec.state.history("m") if r["revision"] == revision]


async def test_a_waiting_revision_is_applied_once_when_admitted(tmp_path: Path) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    rec, target, outcomes = await make(tmp_path, gates)
    script.answers["r1"] = Decision("wait", "waiting: step 2 of 5")
    rec.changed(Change("m", "r1", doc("v1.0.0")))
    await rec.idle()
    assert outcomes == [] and rows(rec, "r1") == [] and target.server.loaded == {}
    gates.recheck()  # still waiting: asked again, nothing happens
    await rec.idle()
    assert script.asked == ["r1", "r1"] and outcomes == []
    script.answers.pop("r1")
    gates.recheck()
    await rec.idle()
    assert [o.label for o in outcomes] == ["applied"] and rows(rec, "r1") == ["applied"]
    rec.changed(Change("m", "r1", doc("v1.0.0")))  # delivered again: handled already
    gates.recheck()
    await rec.idle()
    assert rows(rec, "r1") == ["applied"] and script.asked == ["r1", "r1", "r1"]


async def test_a_waiting_revision_survives_a_restart_unhandled(tmp_path: Path) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    script.answers["r1"] = Decision("wait", "waiting")
    rec, _, _ = await make(tmp_path, gates)
    rec.changed(Change("m", "r1", doc("v1.0.0")))
    await rec.idle()
    await rec.drain(1.0)
    again, target, outcomes = await make(tmp_path, gates)  # same state: a restarted daemon
    again.snapshot({"m": Change("m", "r1", doc("v1.0.0"))})
    await again.idle()
    assert outcomes == [] and script.asked == ["r1", "r1"]
    script.answers.clear()
    gates.recheck()
    await again.idle()
    assert rows(again, "r1") == ["applied"] and target.server.loaded["m"].version == "v1.0.0"


async def test_a_newer_revision_replaces_the_waiting_one_and_deletes_drop_it(tmp_path: Path) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    script.answers["r1"] = Decision("wait", "waiting")
    rec, target, outcomes = await make(tmp_path, gates)
    rec.changed(Change("m", "r1", doc("v1.0.0")))
    rec.changed(Change("m", "r2", doc("v1.0.1")))
    await rec.idle()
    script.answers.clear()
    gates.recheck()
    await rec.idle()
    assert [(o.revision, o.label) for o in outcomes] == [("r2", "applied")]
    script.answers["r3"] = Decision("wait", "waiting")
    rec.changed(Change("m", "r3", doc("v1.0.2")))
    rec.changed(Change.deletion("m"))
    await rec.idle()
    script.answers.clear()
    gates.recheck()
    await rec.idle()
    assert rows(rec, "r3") == [] and target.server.loaded["m"].version == "v1.0.1"


async def test_a_refused_revision_is_recorded_rejected_once_and_never_applied(tmp_path: Path) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    script.answers["r1"] = Decision("refuse", "not applied: rollout abc was aborted: boom")
    rec, target, outcomes = await make(tmp_path, gates)
    rec.changed(Change("m", "r1", doc("v1.0.0")))
    rec.changed(Change("m", "r1", doc("v1.0.0")))
    gates.recheck()
    await rec.idle()
    assert [(o.verdict, o.error, o.reason) for o in outcomes] == [
        (Verdict.REJECTED, "AdmissionRefused", "not applied: rollout abc was aborted: boom")]
    assert rows(rec, "r1") == ["rejected"] and target.server.loaded == {}
    assert rec.state.last_handled("m") == "r1"


class Slots:
    """RestartSlots that log entering and leaving into the fake server's call log."""

    def __init__(self, server: FakeServer, refuse: str | None = None) -> None:
        self.server = server
        self.refuse = refuse

    @contextlib.asynccontextmanager
    async def slot(self, model: str, revision: str) -> AsyncIterator[None]:
        if self.refuse:
            raise ApplyError(self.refuse)
        self.server.calls.append(f"slot+ {model} {revision}")
        try:
            yield
        finally:
            self.server.calls.append(f"slot- {model}")


def spec(version: str, image: str) -> ModelSpec:
    data: dict[str, Any] = {"name": "m", "version": version, "runtime": {"image": image},
                            "model": {"uri": "file:///w"}}
    return ModelSpec.model_validate(data)


@pytest.mark.parametrize("in_place", [False, True])
async def test_a_restart_runs_inside_the_restart_slot(tmp_path: Path, in_place: bool) -> None:
    server = FakeServer()
    gates = Gates()
    gates.restarts = Slots(server)
    settings = Settings(state_dir=tmp_path)
    executor = Executor(settings, None, FakeRuntime(server, in_place=in_place),
                        prober=ScriptedProber(), gates=gates)
    from watcher.core.plan import Plan

    await executor.restart(spec("v1.0.0", "img:1"), "r1")  # the instance serving now
    server.calls.clear()
    await executor.execute(Plan("restart", ("runtime.image",)), spec("v1.0.1", "img:2"),
                           spec("v1.0.0", "img:1"), "r2")
    calls = [c.split()[0] for c in server.calls]
    # blue/green: the old instance stops inside the slot, once the new one took over;
    # in place: starting the new one replaced the old
    taken_over = [] if in_place else ["stop"]
    assert calls == ["prepare", "slot+", "start", *taken_over, "slot-"]


async def test_a_refused_slot_fails_the_apply_before_anything_restarts(tmp_path: Path) -> None:
    server = FakeServer()
    gates = Gates()
    gates.restarts = Slots(server, refuse="no restart slot: the fleet is away")
    executor = Executor(Settings(state_dir=tmp_path), None, FakeRuntime(server),
                        prober=ScriptedProber(), gates=gates)
    with pytest.raises(ApplyError, match="fleet is away"):
        await executor.restart(spec("v1.0.0", "img:1"), "r1")
    assert [c for c in server.calls if c.startswith("start")] == []
