"""Footprint of the idle daemon: RSS and CPU over a quiet window with 1, 100, 1000 models.

    python -m bench.footprint --source etcd --models 1,100,1000 --seconds 60

The daemon runs watch-only (no target or runtime: it records revisions), which is what
watching costs. After every model is applied, the daemon is left alone for `--seconds` and
its CPU time and RSS are read from /proc at the start and end. No busy polling means idle
CPU near 0 % whatever the number of models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit, peak_rss, proc_sample, spec_doc, table
from bench.sources import center
from tests.infra.common import wait_until
from tests.infra.daemon import DaemonHarness


def idle(kind: str, root: Path, models: int, seconds: float) -> dict[str, Any]:
    with center(kind, root / "center") as c:
        for i in range(models):
            c.publish(f"m{i:04d}", spec_doc(f"m{i:04d}", 1))
        daemon = DaemonHarness(root / "daemon", {"log_level": "WARNING", "source": c.source_settings()})
        try:
            daemon.start()
            wait_until(lambda: len(daemon.status()["models"]) == models
                       and all(m["applied_revision"] for m in daemon.status()["models"].values()),
                       300, f"{models} models applied", interval=0.5)
            assert daemon.proc is not None
            pid = daemon.proc.pid
            time.sleep(2.0)  # let start-up work settle
            cpu0, rss0 = proc_sample(pid)
            t0 = time.monotonic()
            time.sleep(seconds)
            cpu1, rss1 = proc_sample(pid)
            wall = time.monotonic() - t0
            return {"models": models, "idle_cpu_percent": 100 * (cpu1 - cpu0) / wall,
                    "rss_mib": rss1 / 2**20, "rss_growth_kib": (rss1 - rss0) / 1024,
                    "peak_rss_mib": peak_rss(pid) / 2**20, "window_s": round(wall, 1)}
        finally:
            daemon.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="all", choices=["all", "localdir", "etcd", "nacos"])
    p.add_argument("--models", default="1,100,1000")
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    kinds = ["localdir", "etcd", "nacos"] if args.source == "all" else [args.source]
    counts = [int(x) for x in args.models.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for kind in kinds:
            for n in counts:
                r = idle(kind, Path(tmp) / f"{kind}-{n}", n, args.seconds)
                results.append({"source": kind, **r})
                print(f"  {kind} {n} models: {r['idle_cpu_percent']:.2f}% CPU, {r['rss_mib']:.1f} MiB", flush=True)
    rows = [[r["source"], r["models"], r["idle_cpu_percent"], r["rss_mib"], r["peak_rss_mib"], r["rss_growth_kib"]]
            for r in results]
    text = table(f"idle footprint over {args.seconds:g} s (watch-only daemon)",
                 ["source", "models", "idle CPU %", "RSS MiB", "peak RSS MiB", "RSS growth KiB"], rows)
    emit("footprint", text, {"seconds": args.seconds, "results": results})


if __name__ == "__main__":
    main()
