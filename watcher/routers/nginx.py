"""Traffic switching on the host: an nginx upstream with weights, rewritten and reloaded.

The daemon owns one small file (`upstream_file`), which the operator's nginx config
includes inside `http {}`. It holds the upstream block and a JSON `log_format` named
`mw_<upstream>`; pointing an `access_log` at `access_log` with that format lets every step
check the new instance's error rate and latency from nginx's own records.

`apply()` promises that when it returns, every request nginx accepts follows the new
weights: it writes the file atomically (temp file + rename in the same directory), checks
it with `nginx -t` (restoring the previous file on failure), runs `nginx -s reload`, and
waits until the previous generation of workers has exited, i.e. requests accepted under the
old weights have finished. That is also the drain before an old container is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from watcher.core.errors import HealthGateError, RuntimeStartError
from watcher.fsutil import write_atomically
from watcher.proc import run_argv

log = logging.getLogger("watcher.routers.nginx")


class TrafficError(RuntimeStartError):
    """nginx refused the rendered config or could not be reloaded; the old file is back."""


class NginxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream_file: Path = Field(description="file the daemon rewrites; included in http {}")
    upstream: str = Field("{model}", pattern=r"^[A-Za-z0-9_.{}-]+$",
                          description="upstream block name; {model} is replaced")
    binary: str = "nginx"
    conf: Path | None = Field(None, description="nginx -c FILE")
    prefix: Path | None = Field(None, description="nginx -p DIR")
    pid_file: Path | None = Field(None, description="master pid file: lets reloads wait for "
                                  "old workers to finish (drain); without it, `settle` seconds")
    access_log: Path | None = Field(None, description="access log in format mw_<upstream>")
    settle: float = Field(1.0, ge=0)
    drain_timeout: float = Field(30.0, gt=0)
    command_timeout: float = Field(15.0, gt=0)


class StepPlan(BaseModel):
    """Percent of traffic on the new instance at each step; each held for `hold` seconds."""

    model_config = ConfigDict(extra="forbid")

    steps: list[int] = Field(default_factory=lambda: [100])
    hold: float = Field(0.0, ge=0)
    max_error_rate: float = Field(0.05, ge=0, le=1, description="5xx share of new's requests")
    max_latency_ms: float | None = Field(None, gt=0, description="p95 upstream time for new")
    min_requests: int = Field(10, ge=1, description="fewer requests in a step: no rate verdict")

    @field_validator("steps")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 < p <= 100 for p in v) or v != sorted(set(v)) or v[-1] != 100:
            raise ValueError("steps must be ascending percents in 1..100 ending at 100")
        return v


def render(opts: NginxOptions, weights: dict[str, int], backup: list[str] | None = None) -> str:
    """The managed file for `weights` (addr -> percent; 0 leaves the server out)."""
    name = log_format_name(opts.upstream)
    lines = [
        "# managed by model-watcher: rewritten on every traffic step, do not edit",
        f"# model-watcher weights: {json.dumps(weights, sort_keys=True)}",
        f"log_format {name} escape=json '{{\"t\":$msec,\"addr\":\"$upstream_addr\","
        "\"status\":\"$upstream_status\",\"rt\":\"$upstream_response_time\"}';",
        f"upstream {opts.upstream} {{",
    ]
    live = [(a, w) for a, w in weights.items() if w > 0]
    if not live:
        raise ValueError("an upstream needs at least one server with weight > 0")
    lines += [f"    server {addr} weight={w} max_fails=0;" for addr, w in live]
    spare = [a for a in backup or [] if a not in weights]
    lines += [f"    server {addr} backup max_fails=0;" for addr in spare]
    lines.append("}")
    return "\n".join(lines) + "\n"


def log_format_name(upstream: str) -> str:
    return "mw_" + re.sub(r"\W", "_", upstream)


def read_weights(path: Path) -> dict[str, int]:
    """The weights last written to `path` (empty when absent or not ours)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    m = re.search(r"^# model-watcher weights: (.*)$", text, re.M)
    if m is None:
        return {}
    data = json.loads(m[1])
    return {str(k): int(v) for k, v in data.items()}


class NginxUpstream:
    def __init__(self, opts: NginxOptions) -> None:
        self.opts = opts
        self._lock = asyncio.Lock()

    def weights(self) -> dict[str, int]:
        return read_weights(self.opts.upstream_file)

    async def apply(self, weights: dict[str, int], backup: list[str] | None = None) -> None:
        """Write, test, reload and wait for the previous workers to drain (see module doc)."""
        async with self._lock:
            path = self.opts.upstream_file
            previous = path.read_text() if path.exists() else None
            before = self._workers()
            write_atomically(path, render(self.opts, weights, backup).encode())
            try:
                await self._nginx("-t", "-q")
                await self._nginx("-s", "reload")
            except TrafficError:
                if previous is None:
                    path.unlink(missing_ok=True)
                else:
                    write_atomically(path, previous.encode())
                raise
            log.info("nginx upstream %s: %s%s", self.opts.upstream, weights,
                     f" (backup {backup})" if backup else "")
            await self._drain(before)

    async def _nginx(self, *args: str) -> None:
        argv = [self.opts.binary, *args]
        if self.opts.conf is not None:
            argv += ["-c", str(self.opts.conf)]
        if self.opts.prefix is not None:
            argv += ["-p", str(self.opts.prefix)]
        await run_argv(argv, seconds=self.opts.command_timeout, error=TrafficError)

    def _master(self) -> int | None:
        if self.opts.pid_file is None:
            return None
        try:
            return int(self.opts.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _workers(self) -> set[int]:
        master = self._master()
        return set() if master is None else children(master)

    async def _drain(self, before: set[int]) -> None:
        """Wait until a new worker generation is up and the old one has exited (bounded)."""
        master = self._master()
        if master is None:
            await asyncio.sleep(self.opts.settle)
            return
        deadline = time.monotonic() + self.opts.drain_timeout
        while time.monotonic() < deadline:
            now = children(master)
            if now - before and not (now & before):
                return
            await asyncio.sleep(0.02)
        log.warning("nginx workers of the previous config still running after %gs; going on",
                    self.opts.drain_timeout)

    def window(self) -> AccessWindow:
        """Start counting access-log records from now."""
        return AccessWindow(self.opts.access_log)


def children(pid: int) -> set[int]:
    """Pids whose parent is `pid` (Linux /proc), excluding zombies."""
    out: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == pid:
            out.add(int(entry.name))
    return out


@dataclass
class StepStats:
    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None


class AccessWindow:
    """Access-log records appended since creation, attributed per upstream address."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = path.stat().st_size if path is not None and path.exists() else 0

    def stats(self, addr: str) -> StepStats:
        if self.path is None or not self.path.exists():
            return StepStats()
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        stats, times = StepStats(), []
        for line in data.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                rec = json.loads(line)
                addrs = [a.strip() for a in rec["addr"].split(",")]
                codes = [c.strip() for c in rec["status"].split(",")]
                rts = [r.strip() for r in rec["rt"].split(",")]
                for i, a in enumerate(addrs):
                    if a != addr:
                        continue
                    stats.requests += 1
                    code = codes[i] if i < len(codes) else "-"
                    stats.errors += not code.isdigit() or int(code) >= 500
                    if i < len(rts) and rts[i].replace(".", "", 1).isdigit():
                        times.append(float(rts[i]) * 1000)
        if times:
            times.sort()
            stats.p95_ms = times[min(len(times) - 1, int(len(times) * 0.95))]
        return stats

    def verdict(self, addr: str, plan: StepPlan) -> str | None:
        """None when the new upstream's error rate and latency are within the plan's limits."""
        s = self.stats(addr)
        if s.requests < plan.min_requests:
            return None
        rate = s.errors / s.requests
        if rate > plan.max_error_rate:
            return (f"error rate {rate:.1%} ({s.errors}/{s.requests}) on {addr} over the "
                    f"{plan.max_error_rate:.1%} limit")
        limit = plan.max_latency_ms
        if limit is not None and s.p95_ms is not None and s.p95_ms > limit:
            return f"p95 latency {s.p95_ms:.0f} ms on {addr} over {plan.max_latency_ms:g} ms"
        return None


Probe = Callable[[], Awaitable[str | None]]
StepHook = Callable[[int], None]


async def switch(
    upstream: NginxUpstream,
    new: str,
    old: str | None,
    plan: StepPlan,
    probe: Probe,
    on_step: StepHook | None = None,
) -> None:
    """Move traffic from `old` to `new` along `plan`; at each step hold, then ask `probe`
    and the access log. A reason (or any error) puts 100 % back on `old` and raises
    HealthGateError. On success only `new` is left in the upstream, drained."""
    if old is None or old == new:
        await upstream.apply({new: 100})
        return
    try:
        for pct in plan.steps:
            weights = {new: 100} if pct == 100 else {new: pct, old: 100 - pct}
            await upstream.apply(weights, backup=[old])
            if on_step is not None:
                on_step(pct)
            window = upstream.window()
            if plan.hold:
                await asyncio.sleep(plan.hold)  # deliberate exposure time, not a readiness wait
            reason = await probe() or window.verdict(new, plan)
            if reason is not None:
                raise HealthGateError(f"traffic step {pct}%: {reason}; all traffic back on {old}")
    except Exception as exc:
        try:
            await upstream.apply({old: 100})
        except TrafficError as restore_exc:
            log.error("restoring traffic to %s failed: %s", old, restore_exc.reason)
        if isinstance(exc, HealthGateError):
            raise
        raise HealthGateError(
            f"traffic switch to {new} failed: {exc}; all traffic back on {old}"
        ) from exc
    await upstream.apply({new: 100})
