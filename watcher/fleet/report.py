"""What a member says about itself in the center: who it is and, per model, what it serves.

One `MemberReport` per daemon, alive only while the daemon is (an etcd key bound to its
lease, a Nacos ephemeral instance's metadata). Per model:

    revision, version   the applied (serving) revision and its version
    last, outcome       the newest revision the source delivered that it handled, and how
                        (applied | noop | rejected | failed | ...): a failed canary shows here
    state               serving | waiting | applying | restarting
    health              ok | failing | "" (soak probes of a rollout's revision; "" = not probed)
    note                one short line: why waiting, why failing
    latency             the last soak probe's latency in ms ("" = not probed)

The encoding is compact JSON with short keys: Nacos limits an instance's metadata to 1,024
characters, so `encode(limit=...)` keeps the models in a rollout first and drops the rest
(`truncated` says how many).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

NOTE_CHARS = 80


@dataclass(frozen=True)
class ModelReport:
    revision: str = ""
    version: str = ""
    last: str = ""
    outcome: str = ""
    state: str = "serving"
    health: str = ""
    note: str = ""
    latency: str = ""

    def encode(self) -> list[str]:
        return [self.revision, self.version, self.last, self.outcome, self.state, self.health,
                self.note[:NOTE_CHARS], self.latency]

    @classmethod
    def decode(cls, raw: object) -> ModelReport:
        items = [str(x) for x in raw][:8] if isinstance(raw, list) else []
        items += [""] * (8 - len(items))
        return cls(*items)

    @property
    def latency_ms(self) -> float | None:
        try:
            return float(self.latency) if self.latency else None
        except ValueError:
            return None

    def took(self, revision: str) -> bool:
        """Serves `revision` now."""
        return bool(revision) and self.revision == revision

    def failed(self, revision: str) -> bool:
        """Handling `revision` failed or was rejected here."""
        return bool(revision) and self.last == revision and self.outcome in ("failed", "rejected")


@dataclass(frozen=True)
class MemberReport:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    models: dict[str, ModelReport] = field(default_factory=dict)
    #: unix time of the report (the reporter's clock)
    at: float = 0.0
    truncated: int = 0

    def model(self, name: str) -> ModelReport:
        return self.models.get(name, ModelReport())

    def with_model(self, name: str, report: ModelReport) -> MemberReport:
        return replace(self, models={**self.models, name: report})

    def encode(self, limit: int | None = None, first: tuple[str, ...] = ()) -> str:
        """Compact JSON; with `limit`, models outside `first` are dropped until it fits."""
        order = [m for m in first if m in self.models] + sorted(set(self.models) - set(first))
        kept = list(order)
        while True:
            data: dict[str, Any] = {"id": self.id, "at": round(self.at, 3),
                                    "m": {m: self.models[m].encode() for m in kept}}
            if self.labels:
                data["l"] = self.labels
            if len(kept) < len(order):
                data["t"] = len(order) - len(kept)
            text = json.dumps(data, separators=(",", ":"), sort_keys=True)
            if limit is None or len(text) <= limit or not kept:
                return text
            kept.pop()

    @classmethod
    def decode(cls, text: str | bytes) -> MemberReport | None:
        """The report, or None for anything that is not one (logged by the caller)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        labels = data.get("l")
        models = data.get("m")
        labels = labels if isinstance(labels, dict) else {}
        models = models if isinstance(models, dict) else {}
        return cls(data["id"], {str(k): str(v) for k, v in labels.items()},
                   {str(k): ModelReport.decode(v) for k, v in models.items()},
                   float(data.get("at") or 0.0), int(data.get("t") or 0))
