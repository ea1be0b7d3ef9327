"""Prometheus metrics, fed by the daemon's events, in a registry of the daemon's own.

Served as text by `GET /metrics` on the loopback API listener (watcher/api/server.py). Label values
stay bounded: `reason` is a class of reason (`document`, `policy`, `verification`, `target`,
`runtime`, `health_gate`, ...), never the free text, which goes to logs and history.

    model_watcher_revisions_total{model,outcome,reason}     seen/applied/noop/rejected/failed/
                                                             rolled_back/deleted
    model_watcher_applied_info{model,revision,version}      1 for the applied revision
    model_watcher_applied_timestamp_seconds{model}
    model_watcher_apply_duration_seconds{model,plan}        histogram (event.duration)
    model_watcher_publish_to_applied_seconds{model}         histogram (event.fields observed_at
                                                             or published_at -> applied)
    model_watcher_source_up                                  1 connected, 0 not
    model_watcher_source_transitions_total{state}
    model_watcher_health_gate_total{model,result}            pass / fail
    model_watcher_alerts_sent_total{rule,notifier,status,result}
    model_watcher_webhook_requests_total{endpoint,result}
    model_watcher_actions_total{action,result}               Alertmanager self-healing
    model_watcher_ready                                      1 after the first reconcile
    model_watcher_weights_bytes_total{scheme}                bytes downloaded into the cache
    model_watcher_weights_fetches_total{scheme,result}       fetched / cached / failed
    model_watcher_weights_cache_bytes                        size of the verified blobs
    model_watcher_weights_fetch_bytes{model}                 in-flight staging: bytes in place,
    model_watcher_weights_fetch_total_bytes{model}             of total, at rate, eta (gauges,
    model_watcher_weights_fetch_rate_bytes{model}              present while fetching)
    model_watcher_weights_fetch_eta_seconds{model}
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher.core.events import Event, Kind

log = logging.getLogger("watcher.observability.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OUTCOMES = {Kind.SEEN, Kind.APPLIED, Kind.NOOP, Kind.REJECTED, Kind.FAILED, Kind.ROLLED_BACK,
             Kind.DELETED}
#: error class (event.fields["error"]) -> reason label
_ERROR_CLASSES = {
    "DocumentError": "document", "PolicyError": "policy", "VerificationError": "verification",
    "TargetError": "target", "RuntimeStartError": "runtime", "HealthGateError": "health_gate",
    "RejectedError": "rejected", "ApplyError": "apply",
}
#: fallback when the event names no error class: words of the reason -> reason label
_REASON_WORDS = (
    ("health", "health_gate"), ("signature", "verification"), ("sha256", "verification"),
    ("digest", "verification"), ("channel", "policy"), ("downgrade", "policy"),
    ("lower than", "policy"), ("image tag", "policy"), ("schema", "document"),
    ("yaml", "document"), ("json", "document"), ("document", "document"),
    ("restart", "runtime"), ("container", "runtime"), ("hot swap", "target"),
)


def reason_label(ev: Event) -> str:
    """A bounded label for why: the plan for successes, a class of error for failures."""
    if ev.kind in (Kind.APPLIED, Kind.NOOP, Kind.ROLLED_BACK):
        return plan_label(ev)
    if ev.kind not in (Kind.REJECTED, Kind.FAILED):
        return ""
    error = ev.fields.get("error")
    if isinstance(error, str) and error:
        return _ERROR_CLASSES.get(error, error.removesuffix("Error").lower() or "other")
    text = (ev.reason or "").lower()
    return next((label for word, label in _REASON_WORDS if word in text), "other")


def plan_label(ev: Event) -> str:
    """`hot`, `restart` or `noop`: the plan's kind without its list of changed paths."""
    return (ev.plan or "").split(" ", 1)[0]


class Metrics:
    """All metrics of one daemon. Methods are cheap and never raise into the event bus."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.revisions = Counter("model_watcher_revisions", "Revisions by outcome and reason",
                                 ["model", "outcome", "reason"], registry=r)
        self.applied_info = Gauge("model_watcher_applied_info", "The applied revision (value 1)",
                                  ["model", "revision", "version"], registry=r)
        self.applied_ts = Gauge("model_watcher_applied_timestamp_seconds",
                                "When the applied revision was committed", ["model"], registry=r)
        self.apply_duration = Histogram(
            "model_watcher_apply_duration_seconds", "Apply duration, health gate included",
            ["model", "plan"], buckets=_DURATION_BUCKETS, registry=r)
        self.publish_latency = Histogram(
            "model_watcher_publish_to_applied_seconds",
            "From the change being observed at the source to the revision being applied",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.source_up = Gauge("model_watcher_source_up", "1 while the config center is reachable",
                               registry=r)
        self.source_transitions = Counter("model_watcher_source_transitions",
                                          "Source connectivity edges", ["state"], registry=r)
        self.health = Counter("model_watcher_health_gate", "Health gate verdicts",
                              ["model", "result"], registry=r)
        self.alerts = Counter("model_watcher_alerts_sent", "Alert notifications",
                              ["rule", "notifier", "status", "result"], registry=r)
        self.webhooks = Counter("model_watcher_webhook_requests", "Webhook requests by result",
                                ["endpoint", "result"], registry=r)
        self.actions = Counter("model_watcher_actions", "Self-healing actions (Alertmanager)",
                               ["action", "result"], registry=r)
        self.ready = Gauge("model_watcher_ready", "1 once the first reconcile is done", registry=r)
        r.register(WeightsCollector())
        self._applied: dict[str, tuple[str, str]] = {}

    def on_event(self, ev: Event) -> None:
        model = ev.model or ""
        if ev.kind in _OUTCOMES:
            self.revisions.labels(model, str(ev.kind), reason_label(ev)).inc()
        if ev.kind in (Kind.APPLIED, Kind.ROLLED_BACK) and ev.model:
            self._set_applied(ev.model, ev.revision or "", ev.version or "", ev.at)
        if ev.kind in (Kind.APPLIED, Kind.FAILED, Kind.NOOP) and ev.duration is not None:
            self.apply_duration.labels(model, plan_label(ev)).observe(max(ev.duration, 0.0))
        if ev.kind is Kind.APPLIED:
            started = ev.fields.get("published_at", ev.fields.get("observed_at"))
            if isinstance(started, int | float):
                self.publish_latency.labels(model).observe(max(ev.at - float(started), 0.0))
        elif ev.kind is Kind.DELETED and ev.model:
            self._clear_applied(ev.model)
        elif ev.kind in (Kind.SOURCE_UP, Kind.SOURCE_DOWN):
            up = ev.kind is Kind.SOURCE_UP
            self.source_up.set(1 if up else 0)
            self.source_transitions.labels("up" if up else "down").inc()
        elif ev.kind is Kind.HEALTH:
            self.health.labels(model, "pass" if ev.fields.get("ok") else "fail").inc()
        elif ev.kind is Kind.RECONCILED:
            self.ready.set(1)

    def _set_applied(self, model: str, revision: str, version: str, at: float) -> None:
        self._clear_applied(model)
        self.applied_info.labels(model, revision, version).set(1)
        self.applied_ts.labels(model).set(at)
        self._applied[model] = (revision, version)

    def _clear_applied(self, model: str) -> None:
        old = self._applied.pop(model, None)
        if old is not None:
            self.applied_info.remove(model, *old)

    def alert_sent(self, rule: str, notifier: str, status: str, result: str) -> None:
        self.alerts.labels(rule, notifier, status, result).inc()

    def webhook(self, endpoint: str, result: str) -> None:
        self.webhooks.labels(endpoint, result).inc()

    def action(self, action: str, result: str) -> None:
        self.actions.labels(action, result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WeightsCollector(Collector):
    """Weights staging, read at scrape time from the stagers' counters and progress boards."""

    def collect(self) -> list[Metric]:
        from watcher.fetchers.progress import STATS

        total = CounterMetricFamily("model_watcher_weights_bytes", "Bytes downloaded into the weights cache",
                                    labels=["scheme"])
        for scheme, n in sorted(STATS.bytes.items()):
            total.add_metric([scheme], n)
        fetches = CounterMetricFamily("model_watcher_weights_fetches", "Weights stagings by result",
                                      labels=["scheme", "result"])
        for (scheme, result), n in sorted(STATS.fetches.items()):
            fetches.add_metric([scheme, result], n)
        cache = GaugeMetricFamily("model_watcher_weights_cache_bytes", "Verified blobs in the cache",
                                  value=STATS.cache_bytes)
        gauges = {k: GaugeMetricFamily(f"model_watcher_weights_fetch_{k}", help_, labels=["model"])
                  for k, help_ in (("bytes", "Bytes in place of a staging in flight"),
                                   ("total_bytes", "Total bytes of a staging in flight"),
                                   ("rate_bytes", "Download rate of a staging in flight (bytes/s)"),
                                   ("eta_seconds", "Estimated seconds left of a staging in flight"))}
        for p in STATS.in_flight():
            gauges["bytes"].add_metric([p.model], p.done)
            gauges["rate_bytes"].add_metric([p.model], p.rate)
            if p.total is not None:
                gauges["total_bytes"].add_metric([p.model], p.total)
            if p.eta is not None:
                gauges["eta_seconds"].add_metric([p.model], p.eta)
        return [total, fetches, cache, *gauges.values()]

    def describe(self) -> list[Metric]:
        return []


_by_daemon: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()
_by_id: dict[int, tuple[Any, Metrics]] = {}  # for objects that take no weak reference


def metrics_for(daemon: Any) -> Metrics:
    """The one Metrics object of `daemon` (created on first use, shared by every feature)."""
    try:
        found = _by_daemon.get(daemon)
        if found is None:
            found = _by_daemon[daemon] = Metrics()
        return found
    except TypeError:
        pair = _by_id.get(id(daemon))
        if pair is None or pair[0] is not daemon:
            pair = _by_id[id(daemon)] = (daemon, Metrics())
        return pair[1]


async def serve(daemon: Any) -> None:
    """Feed the daemon's metrics from its events until cancelled (only with the API on)."""
    if not daemon.settings.api.enabled:
        return
    metrics = metrics_for(daemon)
    unsubscribe = daemon.bus.subscribe(metrics.on_event)
    try:
        await asyncio.Event().wait()
    finally:
        unsubscribe()
