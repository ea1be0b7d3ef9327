"""A daemon killed mid-promotion resumes (the new instance passes its gate) or reverts."""

from __future__ import annotations

from pathlib import Path

from watcher.core.events import EventBus
from watcher.core.executor import Executor, RestartStep
from watcher.core.outcome import Outcome
from watcher.core.recorder import OutcomeBuffer, Recorder
from watcher.core.recovery import recover
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.fakes.servers import FakeRouter, FakeRuntime, FakeServer, ScriptedProber
from watcher.routers.base import StepPlan
from watcher.settings import Settings

FAST = {"period": 0.001, "failure_threshold": 2, "timeout": 0.1}


def spec(version: str) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "version": version,
                                     "runtime": {"image": f"img:{version}"},
                                     "model": {"uri": "file:///w"}})


async def killed_at_10_percent(tmp_path: Path) -> tuple[State, Executor, FakeRouter, FakeServer,
                                                                 OutcomeBuffer, Recorder]:
    """v1 committed and serving; v2 started beside it, 10 % of the traffic on it, then kill."""
    state = State(tmp_path / "s.db")
    server, router = FakeServer(), FakeRouter(plan=StepPlan(steps=[10, 50, 100]))
    runtime = FakeRuntime(server)
    prober = ScriptedProber()
    ex = Executor(Settings(state_dir=tmp_path, health=FAST), None, runtime, router,  # type: ignore[arg-type]
                  prober=prober)
    old = await runtime.start(spec("v1.0.0"), "r1")
    row = state.record_seen("m", "r1", source="test")
    state.commit(row, "m", "r1", "v1.0.0", spec("v1.0.0").canonical())
    new = await runtime.start(spec("v2.0.0"), "r2")
    state.record_seen("m", "r2", source="test")
    state.write_intent("m", "r2", spec("v2.0.0").canonical(), spec("v1.0.0").canonical(), "restart")
    state.set_intent_step("m", RestartStep("routing", new.id, old.id, 10).encode())
    await router.route("m", {str(new.address): 10, str(old.address): 90})
    bus, buffer = EventBus(), OutcomeBuffer()
    bus.subscribe(buffer)
    return state, ex, router, server, buffer, Recorder(state, bus)


async def test_a_healthy_new_instance_resumes_at_the_step_it_was_entering(tmp_path: Path) -> None:
    state, ex, router, server, buffer, recorder = await killed_at_10_percent(tmp_path)
    await recover(state, ex, recorder)
    (serving,) = server.instances.values()
    assert serving.revision == "r2" and router.weights["m"] == {serving.address: 100}
    assert [w for _, w in router.history][1:] == [  # 10 % entered again: it may not have been
        {serving.address: 10, "127.0.0.1:20001": 90},  # set, held and checked before the kill
        {serving.address: 50, "127.0.0.1:20001": 50}, {serving.address: 100, "127.0.0.1:20001": 0},
        {serving.address: 100}]
    (outcome,) = buffer.outcomes
    assert (outcome.label, outcome.action, outcome.revision) == ("applied", "recover", "r2")
    applied = state.applied("m")
    assert applied is not None and applied.revision == "r2"
    assert state.intents() == [] and state.pending() == []


async def test_an_unhealthy_new_instance_is_reverted_and_handled_anew(tmp_path: Path) -> None:
    state, ex, router, server, buffer, recorder = await killed_at_10_percent(tmp_path)
    assert isinstance(ex._prober, ScriptedProber)
    ex._prober.unhealthy["fake://m/v2"] = "status 503"
    await recover(state, ex, recorder)
    (serving,) = server.instances.values()
    assert serving.revision == "r1" and router.weights["m"] == {serving.address: 100}
    assert [o.label for o in buffer.outcomes] == ["superseded"]  # r2 is handled anew
    assert isinstance(buffer.outcomes[0], Outcome)
    applied = state.applied("m")
    assert applied is not None and applied.revision == "r1"
    assert state.intents() == [] and state.pending() == []
