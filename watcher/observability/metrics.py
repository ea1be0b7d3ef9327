"""Prometheus metrics, fed by the daemon's events, in a registry of the daemon's own.

Served as text by `GET /metrics` on the loopback API listener (watcher/api/server.py). Label values
stay bounded: `reason` is a class of reason (`document`, `policy`, `verification`, `target`,
`runtime`, `health_gate`, ...), never the free text, which goes to logs and history.

    model_watcher_revisions_total{model,outcome,reason}     seen + every Outcome label
                                                             (core/outcome.py LABELS)
    model_watcher_applied_info{model,revision,version}      1 for the applied revision
    model_watcher_applied_timestamp_seconds{model}
    model_watcher_last_outcome_timestamp_seconds{model,outcome}
                                                             when each Outcome label last happened
                                                             (a refusal newer than every success:
                                                             behind the config center)
    model_watcher_apply_duration_seconds{model,plan}        histogram (Outcome.duration)
    model_watcher_publish_to_applied_seconds{model}         histogram (observed at the source
                                                             -> applied)
    model_watcher_source_up                                  1 connected, 0 not
    model_watcher_source_transitions_total{state}
    model_watcher_health_gate_total{model,result}            pass / fail
    model_watcher_alerts_sent_total{rule,notifier,status,result}
    model_watcher_webhook_requests_total{endpoint,result}
    model_watcher_actions_total{action,result}               Alertmanager self-healing
    model_watcher_ready                                      1 after the first reconcile
    model_watcher_rollbacks_total{model,by}                  earlier specs put back: by=operator
                                                             (CLI, alert) or by=daemon (failure)
    model_watcher_weights_bytes_total{scheme}                bytes downloaded into the cache
    model_watcher_weights_fetches_total{scheme,result}       fetched / cached / failed
    model_watcher_weights_cache_bytes                        size of the verified blobs
    model_watcher_weights_fetch_bytes{model}                 in-flight staging: bytes in place,
    model_watcher_weights_fetch_total_bytes{model}             of total, at rate, eta (gauges,
    model_watcher_weights_fetch_rate_bytes{model}              present while fetching)
    model_watcher_weights_fetch_eta_seconds{model}
    model_watcher_fleet_alive / _leader                      this member is live / leads rollouts
    model_watcher_rollout_step{model}                        1-based step of the model's rollout
    model_watcher_rollout_phase{model,phase}                 1 for the rollout's phase
    model_watcher_rollout_waiting{model}                     1 while this member waits its cohort
    model_watcher_fleet_restarting{model}                    1 while it holds a restart slot
    model_watcher_rollout_transitions_total{model,phase}     started/step/paused/resumed/
                                                             completed/aborted (by the leader)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher.core.events import Kind, Message
from watcher.core.outcome import Action, Outcome, Verdict

if TYPE_CHECKING:
    from watcher.features import FeatureContext

log = logging.getLogger("watcher.observability.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: error class (Outcome.error) -> reason label
_ERROR_CLASSES = {
    "DocumentError": "document", "PolicyError": "policy", "VerificationError": "verification",
    "TargetError": "target", "RuntimeStartError": "runtime", "HealthGateError": "health_gate",
    "RejectedError": "rejected", "ApplyError": "apply", "TimeoutError": "deadline",
    "CrashLoop": "crash_loop", "AdmissionRefused": "rollout",
}


def reason_label(o: Outcome) -> str:
    """A bounded label for why: the plan for successes, a class of error for failures."""
    if o.verdict in (Verdict.APPLIED, Verdict.NOOP):
        return o.plan_kind
    if o.verdict not in (Verdict.REJECTED, Verdict.FAILED):
        return ""
    if not o.error:
        return "other"
    return _ERROR_CLASSES.get(o.error, "internal")


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
        self.last_outcome = Gauge(
            "model_watcher_last_outcome_timestamp_seconds",
            "When a revision or action of the model last had this outcome", ["model", "outcome"],
            registry=r)
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
        self.rollbacks = Counter("model_watcher_rollbacks", "Earlier specs put back: by an "
                                 "operator or alert (by=operator), or after a failure (by=daemon)",
                                 ["model", "by"], registry=r)
        r.register(WeightsCollector())
        r.register(FleetCollector())
        self._applied: dict[str, tuple[str, str]] = {}

    def on_message(self, message: Message) -> None:
        if isinstance(message, Outcome):
            self._on_outcome(message)
            return
        ev = message
        if ev.kind is Kind.SEEN:
            self.revisions.labels(ev.model or "", "seen", "").inc()
        elif ev.kind in (Kind.SOURCE_UP, Kind.SOURCE_DOWN):
            up = ev.kind is Kind.SOURCE_UP
            self.source_up.set(1 if up else 0)
            self.source_transitions.labels("up" if up else "down").inc()
        elif ev.kind is Kind.HEALTH:
            self.health.labels(ev.model or "", "pass" if ev.ok else "fail").inc()
        elif ev.kind is Kind.RECONCILED:
            self.ready.set(1)

    def _on_outcome(self, o: Outcome) -> None:
        self.revisions.labels(o.model, o.label, reason_label(o)).inc()
        self.last_outcome.labels(o.model, o.label).set(o.at)
        if o.restored is not None:
            self.rollbacks.labels(o.model, "daemon").inc()
        elif o.label == "rolled_back":
            self.rollbacks.labels(o.model, "operator").inc()
        if o.verdict is Verdict.APPLIED and o.action is not Action.RESTART:
            self._set_applied(o.model, o.revision, o.version or "", o.at)
            if o.observed_at is not None:
                self.publish_latency.labels(o.model).observe(max(o.at - o.observed_at, 0.0))
        if o.duration is not None and o.verdict in (Verdict.APPLIED, Verdict.FAILED, Verdict.NOOP):
            self.apply_duration.labels(o.model, o.plan_kind).observe(max(o.duration, 0.0))
        if o.verdict is Verdict.DELETED and o.unloaded:
            self._clear_applied(o.model)

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


class FleetCollector(Collector):
    """Fleet membership and rollouts, read at scrape time from watcher/fleet/stats.py."""

    def collect(self) -> list[Metric]:
        from watcher.fleet.stats import PHASES, STATS

        alive = GaugeMetricFamily("model_watcher_fleet_alive", "1 while this member is live in "
                                  "the fleet", value=int(STATS.alive))
        leader = GaugeMetricFamily("model_watcher_fleet_leader", "1 while this member leads the "
                                   "rollout controller", value=int(STATS.leading))
        step = GaugeMetricFamily("model_watcher_rollout_step", "Current step (1-based) of the "
                                 "model's rollout", labels=["model"])
        phase = GaugeMetricFamily("model_watcher_rollout_phase", "1 for the phase of the model's "
                                  "rollout", labels=["model", "phase"])
        for model, (index, _, current) in sorted(STATS.rollouts.items()):
            step.add_metric([model], index)
            phase.add_metric([model, current], 1)
        waiting = GaugeMetricFamily("model_watcher_rollout_waiting", "1 while this member's newest "
                                    "revision waits for its cohort", labels=["model"])
        for model in sorted(STATS.waiting):
            waiting.add_metric([model], 1)
        restarting = GaugeMetricFamily("model_watcher_fleet_restarting", "1 while this member "
                                       "holds a fleet restart slot", labels=["model"])
        for model in sorted(STATS.restarting):
            restarting.add_metric([model], 1)
        moves = CounterMetricFamily("model_watcher_rollout_transitions", "Rollout transitions "
                                    "announced by the leader", labels=["model", "phase"])
        for (model, what), n in sorted(STATS.transitions.items()):
            if what in PHASES:
                moves.add_metric([model, what], n)
        return [alive, leader, step, phase, waiting, restarting, moves]

    def describe(self) -> list[Metric]:
        return []


async def serve(ctx: FeatureContext) -> None:
    """Feed the daemon's metrics from its events until cancelled (only with the API on)."""
    if not ctx.settings.api.enabled:
        return
    unsubscribe = ctx.bus.subscribe(ctx.metrics.on_message)
    try:
        await asyncio.Event().wait()
    finally:
        unsubscribe()
