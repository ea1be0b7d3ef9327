"""Fleet figures for /metrics, read at scrape time by observability/metrics.py's collector
(the weights staging does the same): plain counters and gauges of this process, so the
fleet feeds metrics without depending on prometheus_client.

Labels stay bounded: `model` (the models this daemon serves), `phase` (a fixed set).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

PHASES = ("started", "step", "paused", "resumed", "completed", "aborted")


@dataclass
class FleetStats:
    alive: bool = False
    leading: bool = False
    members: int = 0
    #: model -> (1-based step, steps, phase) of the rollout this daemon knows of
    rollouts: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    #: models whose newest revision waits for this member's cohort
    waiting: set[str] = field(default_factory=set)
    #: models holding a restart slot now
    restarting: set[str] = field(default_factory=set)
    #: (model, phase) -> transitions announced by this daemon while it led
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    slot_waits: int = 0
    slot_wait_seconds: float = 0.0


STATS = FleetStats()
