"""Metrics follow the event stream; the text exposition is what Prometheus scrapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from watcher.core.events import Event, Kind
from watcher.core.outcome import Action, Outcome, Verdict
from watcher.core.plan import Plan
from watcher.fakes.context import feature_context
from watcher.observability import metrics
from watcher.settings import ApiSettings


def samples(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


HOT = Plan("hot", ("model.parameters.t",))
RESTART = Plan("restart", ("runtime.env.X", "model.uri"))


def test_reason_labels() -> None:
    rl = metrics.reason_label
    assert rl(Outcome(Verdict.APPLIED, "m", "1", plan=HOT)) == "hot"
    assert rl(Outcome(Verdict.APPLIED, "m", "1", plan=RESTART)) == "restart"
    assert rl(Outcome(Verdict.REJECTED, "m", "1", error="PolicyError")) == "policy"
    assert rl(Outcome(Verdict.FAILED, "m", "1", error="WeirdError")) == "internal"
    assert rl(Outcome(Verdict.FAILED, "m", "1", error="TimeoutError")) == "deadline"
    assert rl(Outcome(Verdict.FAILED, "m", "1")) == "other"
    assert rl(Outcome(Verdict.DELETED, "m", "deleted")) == ""


def test_last_outcome_timestamps_tell_a_refusal_newer_than_every_success() -> None:
    """The rule ModelBehindConfigCenter compares these (deploy/prometheus/)."""
    m = metrics.Metrics()
    m.on_message(Outcome(Verdict.APPLIED, "a", "1", plan=HOT, at=100.0))
    m.on_message(Outcome(Verdict.REJECTED, "a", "2", error="DocumentError", at=200.0))
    m.on_message(Outcome(Verdict.APPLIED, "a", "3", plan=HOT, action=Action.ROLLBACK, at=300.0))
    s = samples(m)
    ts = {dict(labels)["outcome"]: v for (name, labels), v in s.items()
          if name == "model_watcher_last_outcome_timestamp_seconds"}
    assert ts == {"applied": 100.0, "rejected": 200.0, "rolled_back": 300.0}


def test_sequence() -> None:
    m = metrics.Metrics()
    m.on_message(Event(Kind.SOURCE_DOWN))
    m.on_message(Event(Kind.SOURCE_UP))
    m.on_message(Event(Kind.SEEN, model="a", revision="1"))
    m.on_message(Outcome(Verdict.APPLIED, "a", "1", version="v1.0.0", plan=HOT, duration=0.3,
                         at=100.0, observed_at=99.5))
    m.on_message(Outcome(Verdict.REJECTED, "a", "2", error="DocumentError"))
    m.on_message(Event(Kind.HEALTH, model="a", ok=False))
    m.on_message(Outcome(Verdict.FAILED, "a", "3", "health gate failed", plan=RESTART,
                         duration=2.0, error="HealthGateError"))
    m.on_message(Outcome(Verdict.APPLIED, "a", "4", version="v1.1.0", plan=RESTART,
                         duration=1.0, at=200.0))
    m.on_message(Event(Kind.RECONCILED))
    m.alert_sent("r", "slack", "firing", "ok")
    s = samples(m)
    assert s[("model_watcher_revisions_total", (("model", "a"), ("outcome", "applied"),
                                                ("reason", "hot")))] == 1
    assert s[("model_watcher_revisions_total", (("model", "a"), ("outcome", "rejected"),
                                                ("reason", "document")))] == 1
    assert s[("model_watcher_revisions_total", (("model", "a"), ("outcome", "failed"),
                                                ("reason", "health_gate")))] == 1
    info = [k for k in s if k[0] == "model_watcher_applied_info"]
    assert info == [("model_watcher_applied_info",
                     (("model", "a"), ("revision", "4"), ("version", "v1.1.0")))]
    assert s[("model_watcher_applied_timestamp_seconds", (("model", "a"),))] == 200.0
    assert s[("model_watcher_publish_to_applied_seconds_count", (("model", "a"),))] == 1
    assert s[("model_watcher_publish_to_applied_seconds_sum", (("model", "a"),))] == 0.5
    assert s[("model_watcher_apply_duration_seconds_count",
              (("model", "a"), ("plan", "restart")))] == 2
    assert s[("model_watcher_source_up", ())] == 1
    assert s[("model_watcher_source_transitions_total", (("state", "down"),))] == 1
    assert s[("model_watcher_health_gate_total", (("model", "a"), ("result", "fail")))] == 1
    assert s[("model_watcher_ready", ())] == 1
    assert s[("model_watcher_alerts_sent_total", (("notifier", "slack"), ("result", "ok"),
                                                  ("rule", "r"), ("status", "firing")))] == 1
    m.on_message(Outcome(Verdict.DELETED, "a", "deleted", action=Action.DELETE))
    assert [k for k in samples(m) if k[0] == "model_watcher_applied_info"]  # kept: it serves
    m.on_message(Outcome(Verdict.DELETED, "a", "deleted", action=Action.DELETE, unloaded=True))
    assert not [k for k in samples(m) if k[0] == "model_watcher_applied_info"]


async def test_serve_feeds_shared_metrics(tmp_path: Path) -> None:
    ctx = feature_context(tmp_path, api=ApiSettings(enabled=True))
    task = asyncio.create_task(metrics.serve(ctx))
    await asyncio.sleep(0)
    ctx.bus.emit(Event(Kind.RECONCILED))
    assert "model_watcher_ready 1.0" in ctx.metrics.render().decode()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    off = feature_context(tmp_path / "off")
    await asyncio.wait_for(metrics.serve(off), 1)
    assert not off.bus._subs
