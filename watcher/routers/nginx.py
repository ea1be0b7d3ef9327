"""The nginx router: each model's traffic is an nginx upstream with weights, rewritten and
reloaded (the Router contract, routers/base.py).

The daemon owns one small file per model (`upstream_file`, `{model}` replaced), which the
operator's nginx config
includes inside `http {}`. It holds the upstream block and a JSON `log_format` named
`mw_<upstream>`; pointing an `access_log` at `access_log` with that format lets every step
check the new instance's error rate and latency from nginx's own records.

`apply()` promises that when it returns, every request nginx accepts follows the new
weights: it writes the file atomically (temp file + rename in the same directory), has nginx
test and reload it (nginx_control: directly, or through its systemd unit; the previous file
is put back on failure), and waits until the previous generation of workers has exited, i.e.
requests accepted under the old weights have finished. That is also the drain before an old
container is stopped. A file that cannot be written (a read-only path under the unit's
ProtectSystem=strict, permissions) is a TrafficError like a refused reload, so the switch
fails cleanly and the new instance is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.routers.base import StepPlan
from watcher.routers.nginx_control import NginxControl, NginxOptions, TrafficError

__all__ = ["AccessWindow", "NginxOptions", "NginxRouter", "NginxUpstream", "TrafficError"]
log = logging.getLogger("watcher.routers.nginx")


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
    except OSError:  # absent or unreadable: nothing we can have written
        return {}
    m = re.search(r"^# model-watcher weights: (.*)$", text, re.M)
    if m is None:
        return {}
    data = json.loads(m[1])
    return {str(k): int(v) for k, v in data.items()}


class NginxUpstream:
    def __init__(self, opts: NginxOptions) -> None:
        self.opts = opts
        self.control = NginxControl(opts)
        self._lock = asyncio.Lock()

    def weights(self) -> dict[str, int]:
        return read_weights(self.opts.upstream_file)

    async def apply(self, weights: dict[str, int], backup: list[str] | None = None) -> None:
        """Write, test, reload and wait for the previous workers to drain (see module doc)."""
        async with self._lock:
            path = self.opts.upstream_file
            try:
                previous = path.read_text() if path.exists() else None
                write_atomically(path, render(self.opts, weights, backup).encode())
            except OSError as exc:
                raise TrafficError(f"cannot write the nginx upstream file {path}: "
                                   f"{exc.strerror or exc}") from exc
            before = await self.control.workers()
            try:
                await self.control.reload()
            except TrafficError:
                with contextlib.suppress(OSError):
                    if previous is None:
                        path.unlink(missing_ok=True)
                    else:
                        write_atomically(path, previous.encode())
                raise
            log.info("nginx upstream %s: %s%s", self.opts.upstream, weights,
                     f" (backup {backup})" if backup else "")
            await self._drain(before)

    async def _drain(self, before: tuple[int, set[int]] | None) -> None:
        """Wait until a new worker generation is up and the old one has exited (bounded)."""
        if before is None:
            await asyncio.sleep(self.opts.settle)
            return
        started = time.monotonic()
        deadline = started + self.opts.drain_timeout
        while time.monotonic() < deadline:
            now = await self.control.workers()
            if now is None or now[0] != before[0]:
                return  # nginx restarted (a new master): nothing of the old generation is left
            if now[1] - before[1] and not (now[1] & before[1]):
                log.info("nginx: the previous workers exited %.2fs after the reload (drained)",
                         time.monotonic() - started)
                return
            await asyncio.sleep(0.02 if self.opts.unit is None else 0.1)
        log.warning("nginx workers of the previous config still running after %gs; going on",
                    self.opts.drain_timeout)

    def window(self) -> AccessWindow:
        """Start counting access-log records from now."""
        return AccessWindow(self.opts.access_log)


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

    def verdict(self, address: str, plan: StepPlan) -> str | None:
        """None when the new upstream's error rate and latency are within the plan's limits."""
        addr = address
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


class NginxRouterOptions(NginxOptions, StepPlan):
    """`router` settings for kind = "nginx": where the upstream lives, how nginx is reloaded
    (NginxOptions), and the step plan promotions follow (StepPlan)."""


class NginxRouter:
    """Routes each model through its own upstream file ({model} in the paths and name)."""

    def __init__(self, opts: NginxRouterOptions) -> None:
        self.opts = opts
        self.plan = StepPlan.model_validate(opts.model_dump(include=set(StepPlan.model_fields)))
        self._upstreams: dict[str, NginxUpstream] = {}

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> NginxRouter:
        return cls(parse_options(NginxRouterOptions, options, "router"))

    def upstream(self, model: str) -> NginxUpstream:
        """The nginx upstream of `model` ({model} in the file paths and name is replaced)."""
        found = self._upstreams.get(model)
        if found is None:
            base = NginxOptions.model_validate(self.opts.model_dump(
                include=set(NginxOptions.model_fields)))
            fill = {k: str(v).replace("{model}", model) for k, v in base.model_dump().items()
                    if k in ("upstream_file", "upstream", "access_log") and v is not None}
            found = self._upstreams[model] = NginxUpstream(base.model_copy(update={
                k: (v if k == "upstream" else Path(v)) for k, v in fill.items()}))
        return found

    async def routes(self, model: str) -> dict[str, int]:
        return self.upstream(model).weights()

    async def route(self, model: str, weights: dict[str, int]) -> None:
        """Set the weights; an address given weight 0 stays in the upstream as a backup (the
        old instance during the 100 % step: nginx falls back to it if the new one fails)."""
        backup = [a for a, w in weights.items() if w == 0]
        await self.upstream(model).apply({a: w for a, w in weights.items() if w > 0},
                                         backup=backup or None)

    def observe(self, model: str) -> AccessWindow:
        return self.upstream(model).window()

    async def aclose(self) -> None:
        return None
