"""The traffic contract, beside the Runtime (Flagger's `router` package: set routes, get
routes; the canary logic lives elsewhere, in core/promotion.py).

    routes(model)            address -> percent of the model's traffic, as set now
    route(model, weights)    set them; returns once the requests accepted under the previous
                             weights have finished (the drain before an instance is stopped)
    observe(model)           start counting what the traffic says from now on: an Observation
                             whose verdict(address) is None while the address's error rate and
                             latency are within the plan, else the reason (None: this router
                             cannot tell; the health probe alone decides)
    plan                     the step plan promotions follow (steps, hold, thresholds)

Implementations: routers/nginx.py (an nginx upstream with weights). A fleet or a service
mesh would be another module here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StepPlan(BaseModel):
    """Percent of traffic on the new instance at each step; each held for `hold` seconds."""

    model_config = ConfigDict(extra="forbid")

    steps: list[int] = Field(default_factory=lambda: [100])
    hold: float = Field(0.0, ge=0, le=3600)
    max_error_rate: float = Field(0.05, ge=0, le=1, description="5xx share of new's requests")
    max_latency_ms: float | None = Field(None, gt=0, description="p95 upstream time for new")
    min_requests: int = Field(10, ge=1, description="fewer requests in a step: no rate verdict")

    @field_validator("steps")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 < p <= 100 for p in v) or v != sorted(set(v)) or v[-1] != 100:
            raise ValueError("steps must be ascending percents in 1..100 ending at 100")
        return v


class Observation(Protocol):
    def verdict(self, address: str, plan: StepPlan) -> str | None:
        """None while `address` is within the plan's limits since the observation began."""
        ...


@runtime_checkable
class Router(Protocol):
    plan: StepPlan

    async def routes(self, model: str) -> dict[str, int]:
        """address -> percent, as last set (empty: nothing routed yet)."""
        ...

    async def route(self, model: str, weights: dict[str, int]) -> None:
        """Set the weights (percent; an address at 0 is a backup: used only if the others
        fail; an address not given is out); return once drained.
        RuntimeStartError (TrafficError) when the router refused; the old weights stay."""
        ...

    def observe(self, model: str) -> Observation | None:
        ...

    async def aclose(self) -> None: ...
