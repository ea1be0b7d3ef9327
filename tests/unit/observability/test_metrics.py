"""Metrics follow the event stream; the text exposition is what Prometheus scrapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from watcher.core.events import Event, Kind
from watcher.fakes.context import feature_context
from watcher.observability import metrics
from watcher.settings import ApiSettings


def samples(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_reason_labels() -> None:
    rl = metrics.reason_label
    assert rl(Event(Kind.APPLIED, plan="hot")) == "hot"
    assert rl(Event(Kind.APPLIED, plan="restart (runtime.env.X, model.uri)")) == "restart"
    assert rl(Event(Kind.REJECTED, fields={"error": "PolicyError"})) == "policy"
    assert rl(Event(Kind.FAILED, fields={"error": "WeirdError"})) == "weird"
    assert rl(Event(Kind.REJECTED, reason="invalid YAML at line 3")) == "document"
    assert rl(Event(Kind.REJECTED, reason="version v1.3.0-dev is on the 'dev' channel")) == "policy"
    assert rl(Event(Kind.FAILED, reason="health gate failed after 3 consecutive failures")) \
        == "health_gate"
    assert rl(Event(Kind.FAILED, reason="???")) == "other"
    assert rl(Event(Kind.SEEN)) == ""


def test_sequence() -> None:
    m = metrics.Metrics()
    m.on_event(Event(Kind.SOURCE_DOWN))
    m.on_event(Event(Kind.SOURCE_UP))
    m.on_event(Event(Kind.SEEN, model="a", revision="1"))
    m.on_event(Event(Kind.APPLIED, model="a", revision="1", version="v1.0.0", plan="hot",
                     duration=0.3, at=100.0, fields={"observed_at": 99.5}))
    m.on_event(Event(Kind.REJECTED, model="a", revision="2", fields={"error": "DocumentError"}))
    m.on_event(Event(Kind.HEALTH, model="a", fields={"ok": False}))
    m.on_event(Event(Kind.FAILED, model="a", revision="3", plan="restart", duration=2.0,
                     reason="health gate failed"))
    m.on_event(Event(Kind.APPLIED, model="a", revision="4", version="v1.1.0", plan="restart",
                     duration=1.0, at=200.0))
    m.on_event(Event(Kind.RECONCILED))
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
    m.on_event(Event(Kind.DELETED, model="a"))
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
