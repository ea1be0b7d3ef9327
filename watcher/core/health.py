"""The health gate: HTTP probes with the thresholds Kubernetes probes give meaning to.

After `initial_delay`, probe every `period`. A probe succeeds when the answer has the
expected status within `timeout` and under `latency_ms`. `success_threshold` consecutive
successes pass the gate; `failure_threshold` consecutive failures fail it (so
`failure_threshold * period` is also the start-up budget of a new instance).

Whatever the thresholds, a gate ends within `deadline` seconds (settings only; at least the
settings' own failure budget): alternating answers reset both counters, so without it a
flapping server could hold an apply (and one of `reconcile.max_parallel` slots) forever.
A document's `health` overrides are capped by `HealthLimits` (`[policy.health]`, checked in
admission.py: by default a budget of at most 60 + 30 x (10 + 10) = 660 s, under the default
900 s deadline) and can name only a path on the instance the settings point at, never a URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from watcher.core.spec import HealthOverride
from watcher.placeholders import fill

log = logging.getLogger("watcher.core.health")


class HealthLimits(BaseModel):
    """`[policy.health]`: the most a document's `health` section may ask for."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    initial_delay: float = Field(60.0, ge=0)
    period: float = Field(10.0, gt=0)
    timeout: float = Field(10.0, gt=0)
    latency_ms: float = Field(10_000.0, gt=0)
    success_threshold: int = Field(10, ge=1)
    failure_threshold: int = Field(30, ge=1)


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str | None = Field(None, description="probe URL; {model} is replaced by the model name")
    path: str = "/health"
    expected_status: int = 200
    latency_ms: float = 200.0
    initial_delay: float = 0.0
    period: float = 1.0
    timeout: float = 1.0
    success_threshold: int = Field(1, ge=1)
    failure_threshold: int = Field(3, ge=1)
    deadline: float = Field(900.0, gt=0, description="no gate runs longer, whatever the thresholds")

    @model_validator(mode="after")
    def _deadline_covers_the_budget(self) -> HealthCheck:
        budget = self.initial_delay + self.failure_threshold * (self.period + self.timeout)
        if budget > self.deadline:
            raise ValueError(f"deadline ({self.deadline:g}s) is shorter than the gate's own failure "
                             f"budget (initial_delay + failure_threshold x (period + timeout) = {budget:g}s)")
        return self

    def merged(self, override: HealthOverride | None) -> HealthCheck:
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def url_for(self, name: str, base_url: str | None = None) -> str | None:
        """The probe URL: explicit `url` (templated), else `base_url` + `path`."""
        if base_url:
            return base_url.rstrip("/") + self.path
        if self.url:
            return fill(self.url, name)
        return None


@dataclass
class GateResult:
    ok: bool
    reason: str = ""
    probes: int = 0
    latencies_ms: list[float] = field(default_factory=list)


async def probe(client: httpx.AsyncClient, url: str, check: HealthCheck) -> str | None:
    """One probe; None when healthy, else why not."""
    started = time.perf_counter()
    try:
        resp = await client.get(url, timeout=check.timeout)
    except httpx.TimeoutException:
        return f"GET {url}: no answer within {check.timeout:g}s"
    except httpx.HTTPError as exc:
        return f"GET {url}: {type(exc).__name__}: {exc}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    if resp.status_code != check.expected_status:
        return f"GET {url}: status {resp.status_code}, expected {check.expected_status}"
    if elapsed_ms > check.latency_ms:
        return f"GET {url}: {elapsed_ms:.0f} ms, over the {check.latency_ms:g} ms threshold"
    return None


#: One probe of a URL: None when healthy, else why not (the HTTP one is `probe`).
Prober = Callable[[str, HealthCheck], Awaitable[str | None]]


async def gate(url: str, check: HealthCheck, client: httpx.AsyncClient | None = None, *,
               prober: Prober | None = None) -> GateResult:
    """Run the gate to a verdict. Never raises for probe failures; returns the verdict.
    `prober` replaces the HTTP probe (watcher.fakes.health scripts verdicts for tests)."""
    own = client is None
    http = client or httpx.AsyncClient()
    result = GateResult(ok=False)
    try:
        async with asyncio.timeout(check.deadline):
            await _probe_until_verdict(http, url, check, result, prober)
    except TimeoutError:
        result.ok = False
        result.reason = (f"health gate gave no verdict within its {check.deadline:g}s deadline "
                         f"({result.probes} probes)")
    finally:
        if own:
            await http.aclose()
    return result


async def _probe_until_verdict(http: httpx.AsyncClient, url: str, check: HealthCheck,
                               result: GateResult, prober: Prober | None) -> None:
    successes = failures = 0
    if check.initial_delay:
        await asyncio.sleep(check.initial_delay)
    while True:
        result.probes += 1
        started = time.perf_counter()
        reason = await (prober(url, check) if prober is not None else probe(http, url, check))
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        if reason is None:
            successes, failures = successes + 1, 0
            if successes >= check.success_threshold:
                result.ok = True
                return
        else:
            successes, failures = 0, failures + 1
            log.debug("health probe failed (%d/%d): %s", failures, check.failure_threshold, reason)
            if failures >= check.failure_threshold:
                result.reason = f"health gate failed after {failures} consecutive failures: {reason}"
                return
        await asyncio.sleep(check.period)
