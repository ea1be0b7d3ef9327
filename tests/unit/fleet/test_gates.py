"""The fleet side of the seams: what FleetAdmission answers in each state of a rollout, how
FleetSlots picks its limit and brackets the restart in the member's report; the compact
report within Nacos's metadata limit; `[fleet]` settings validation."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from watcher.core.errors import ApplyError, SettingsError, SourceUnavailable
from watcher.core.gates import Decision
from watcher.fleet.backend import Stored
from watcher.fleet.gates import FleetAdmission, FleetSlots
from watcher.fleet.record import RolloutRecord, parse_policy
from watcher.fleet.report import MemberReport, ModelReport
from watcher.fleet.settings import FleetSettings, fleet_settings
from watcher.fleet.view import RolloutView
from watcher.settings import Settings
from watcher.sources.base import Change

CONTENT = b"name: demo\nversion: v2.0.0\n"
MEMBERS = tuple(f"m{i:02d}" for i in range(20))


def rec(phase: str = "progressing", step: int = 0, gen: int = 1, **kw: Any) -> RolloutRecord:
    data: dict[str, Any] = {
        "id": "abcdef0123456789", "model": "demo", "sha256": hashlib.sha256(CONTENT).hexdigest(),
        "policy": parse_policy("{steps: [10, 50, 100], max_unavailable: 3}"), "phase": phase,
        "step": step, "members": MEMBERS, "revision": "42", "generation": gen,
        "created_at": 10.0, "reason": "boom" if phase == "aborted" else "", **kw}
    return RolloutRecord.model_validate(data)


class Setup:
    def __init__(self, member: str = "m00", labels: dict[str, str] | None = None) -> None:
        self.fleet = FleetSettings(enabled=True, member_id=member, labels=labels or {})
        self.view = RolloutView()
        self.told: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.admission = FleetAdmission(self.fleet, self.view, self._told)

    def _told(self, model: str, d: Decision, note: str) -> None:
        self.told.append((model, d.verdict))
        self.notes.append(note)

    def check(self, content: bytes = CONTENT, observed: float | None = None) -> Decision:
        change = Change("demo", "42", content, observed_at=observed or time.time())
        return self.admission.check(change)

    def load(self, record: RolloutRecord | None, fresh: bool = True) -> None:
        self.view.replace_all({"demo": Stored(record, f"{record.id}-{record.generation}")} if record else {})
        if fresh:
            self.view.read("demo", None, time.time() + 1)


def member_at(step: int, record: RolloutRecord) -> str:
    return next(m for m in MEMBERS if record.joins_at(m) == step)


def test_nothing_is_admitted_before_a_fresh_read_of_the_record() -> None:
    s = Setup()
    d = s.check()
    assert d.verdict == "wait" and "joining the fleet" in d.reason and "demo" in s.view.wanted
    s.load(None, fresh=False)
    d = s.check()
    assert d.verdict == "wait" and "reading the model's rollout record" in d.reason
    s.view.read("demo", None, time.time() + 1)
    assert s.check().verdict == "admit"  # no rollout: today's behaviour
    assert s.told[-1] == ("demo", "admit")


def test_each_phase_of_a_rollout_answers_for_its_revision() -> None:
    r = rec()
    first, later = member_at(0, r), member_at(2, r)
    s = Setup(first)
    s.load(r)
    assert s.check().verdict == "admit"
    assert s.check(b"a document without a rollout").verdict == "admit"
    s2 = Setup(later)
    s2.load(r)
    d = s2.check()
    assert d == Decision("wait", "waiting: step 1 of 3 (10 % of 20 members); this member joins at step 3")
    s2.load(rec(step=1, gen=2))  # the next step: the reason moves on, the report's note not
    assert "step 2 of 3" in s2.check().reason and s2.notes[-2:] == ["joins at step 3"] * 2
    newer = rec(id="1111222233334444", sha256=hashlib.sha256(b"newer").hexdigest(), created_at=20.0)
    s2.load(newer)  # a newer rollout replaced it: the held-back revision must stay held back
    d = s2.check()
    assert d.verdict == "wait" and "superseded by rollout 1111222233334444" in d.reason
    for phase, verdict, words in (("pending", "wait", "rollout starting"),
                                  ("paused", "wait", "(paused)"),
                                  ("aborted", "refuse", "was aborted: boom"),
                                  ("completed", "admit", "")):
        s4 = Setup(later)
        s4.load(rec(phase))
        d = s4.check()
        assert d.verdict == verdict and words in d.reason, (phase, d)


def test_members_outside_the_list_or_the_selector_wait() -> None:
    s = Setup("newcomer")
    s.load(rec())
    assert "not counted in the rollout yet" in s.check().reason
    zoned = rec(policy=parse_policy("{steps: [10, 100], selector: {zone: a}}"))
    s2 = Setup("m00", {"zone": "b"})
    s2.load(zoned)
    assert "outside the rollout's selector" in s2.check().reason


def test_an_older_record_never_replaces_a_newer_one() -> None:
    view = RolloutView()
    seen: list[set[str]] = []
    view.subscribe(seen.append)
    view.replace_all({"demo": Stored(rec(step=1, gen=5), "v5")})
    view.replace_all({"demo": Stored(rec(step=0, gen=4), "v4")})  # a lagging stream
    assert view.record("demo") is not None and view.record("demo").record.step == 1  # type: ignore[union-attr]
    view.read("demo", Stored(rec(step=2, gen=6), "v6"), 1.0)
    assert view.record("demo").record.step == 2 and view.fresh("demo", 0.5)  # type: ignore[union-attr]
    assert not view.fresh("demo", 1.5) and seen == [{"demo"}, {"demo"}]


class Backend:
    def __init__(self, down: int = 0) -> None:
        self.calls: list[str] = []
        self.down = down  # how many takes find the center unreachable

    @contextlib.asynccontextmanager
    async def slot(self, name: str, limit: int) -> AsyncIterator[None]:
        if self.down:
            self.down -= 1
            self.calls.append("unreachable")
            raise SourceUnavailable("Nacos unreachable at 127.0.0.1:8848 while reading")
        self.calls.append(f"take {name} {limit}")
        yield
        self.calls.append(f"give {name}")


class Busy:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def busy(self, model: str, state: str | None) -> None:
        self.log.append(f"state {state}")

    async def flush(self) -> None:
        self.log.append("flush")


async def test_restart_slots_take_the_rollout_limit_and_bracket_the_report() -> None:
    backend = Backend()
    view = RolloutView()
    slots = FleetSlots(FleetSettings(enabled=True, max_unavailable=0), view, backend,
                       Busy(backend.calls))  # type: ignore[arg-type]
    async with slots.slot("demo", "42"):
        backend.calls.append("RESTART")
    assert backend.calls == ["RESTART"]  # no rollout, no limit: no semaphore at all
    backend.calls.clear()
    view.replace_all({"demo": Stored(rec(), "1")})
    async with slots.slot("demo", "42"):
        backend.calls.append("RESTART")
    assert backend.calls == ["state queued", "take demo 3", "state restarting", "flush", "RESTART",
                             "state applying", "flush", "give demo", "state None"]
    view.replace_all({"demo": Stored(rec(phase="aborted", gen=2), "2")})
    with pytest.raises(ApplyError, match="was aborted while this member waited"):
        async with slots.slot("demo", "42"):
            pass
    async with slots.slot("demo", "41"):  # the rollback after the abort restarts freely
        pass


async def test_a_center_outage_while_taking_a_slot_is_waited_out_not_a_failed_apply() -> None:
    backend = Backend(down=2)
    view = RolloutView()
    view.replace_all({"demo": Stored(rec(), "1")})
    slots = FleetSlots(FleetSettings(enabled=True), view, backend, Busy(backend.calls))  # type: ignore[arg-type]
    async with slots.slot("demo", "42"):
        backend.calls.append("RESTART")
    assert backend.calls == ["state queued", "unreachable", "unreachable", "take demo 3",
                             "state restarting", "flush", "RESTART", "state applying", "flush",
                             "give demo", "state None"]


def test_the_report_stays_within_a_size_limit_keeping_rolling_models_first() -> None:
    models = {f"model-{i:02d}": ModelReport("a" * 32, "v1.0.0", "a" * 32, "applied") for i in range(30)}
    models["zz-rolling"] = ModelReport("b" * 32, "v2", state="waiting", note="waiting: step 2 of 5")
    report = MemberReport("m00", {"zone": "a"}, models, 1.0)
    text = report.encode(limit=1000, first=("zz-rolling",))
    back = MemberReport.decode(text)
    assert len(text) <= 1000 and back is not None and "zz-rolling" in back.models
    assert back.truncated == 31 - len(back.models) > 0
    assert back.models["zz-rolling"].note == "waiting: step 2 of 5"
    assert MemberReport.decode(b"not json") is None and MemberReport.decode(b'{"x": 1}') is None


def test_fleet_settings_validate_and_refuse_single_host_sources(tmp_path: Path) -> None:
    base: dict[str, Any] = {"state_dir": tmp_path}
    assert fleet_settings(Settings(**base)) is None
    assert fleet_settings(Settings(**base, fleet={"enabled": False})) is None
    with pytest.raises(SettingsError, match="single-host"):
        fleet_settings(Settings(**base, fleet={"enabled": True}))
    etcd = {"kind": "etcd", "prefix": "/mw/models/"}
    with pytest.raises(SettingsError, match="must not contain each other"):
        fleet_settings(Settings(**base, source=etcd, fleet={"enabled": True, "prefix": "/mw/"}))
    with pytest.raises(SettingsError, match=r"fleet\.ttl"):
        fleet_settings(Settings(**base, source=etcd, fleet={"enabled": True, "ttl": 1}))
    with pytest.raises(SettingsError, match=r"fleet\.labels"):
        fleet_settings(Settings(**base, source=etcd, fleet={"enabled": True, "labels": {"a b": "c"}}))
    fleet = fleet_settings(Settings(**base, source=etcd, fleet={"enabled": True}))
    assert fleet is not None and fleet.member_id and fleet.renew_interval == pytest.approx(10 / 3)
