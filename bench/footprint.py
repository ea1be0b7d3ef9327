"""Footprint of the idle daemon: RSS and CPU over a quiet window with 1, 100, 1000 models.

    python -m bench.footprint --source etcd --models 1,100,1000 --seconds 60 [--api both]

The daemon runs watch-only (no target or runtime: it records revisions), which is what
watching costs. After every model is applied, the daemon is left alone for `--seconds` and
its CPU time and RSS are read from /proc at the start and end. No busy polling means idle
CPU near 0 % whatever the number of models.

`--api on` runs the same daemon with the loopback API (`[api] enabled = true`), scraped once
(/healthz, /status, /metrics) before the window, as Prometheus would; `--api both` runs each
case off and on. The import cost of the API (its modules and server library, in a fresh
interpreter that has already imported the daemon) is printed beside the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, emit, peak_rss, proc_sample, spec_doc, table
from bench.sources import center
from tests.infra.common import free_port, wait_until
from tests.infra.daemon import DaemonHarness

#: what the daemon imports at start, then what enabling the API adds (the server library)
_IMPORT_COST = """if True:
    import json, sys, time
    def rss():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
    import watcher.daemon
    before, n, t = rss(), len(sys.modules), time.perf_counter()
    for name in sys.argv[1:]:
        __import__(name)
    print(json.dumps({"import_ms": 1000 * (time.perf_counter() - t), "rss_kib": rss() - before,
                      "modules": len(sys.modules) - n}))
"""
API_MODULES = ["watcher.api.server", "watcher.api.app", "watcher.api.transport"]


def import_cost(modules: list[str], runs: int = 5) -> dict[str, float]:
    """The API's import cost: median over `runs` fresh interpreters."""
    samples = [json.loads(subprocess.run([sys.executable, "-c", _IMPORT_COST, *modules], cwd=ROOT,
                                         capture_output=True, text=True, check=True).stdout)
               for _ in range(runs)]
    return {k: sorted(s[k] for s in samples)[runs // 2] for k in samples[0]}


def idle(kind: str, root: Path, models: int, seconds: float, api: bool = False) -> dict[str, Any]:
    with center(kind, root / "center") as c:
        for i in range(models):
            c.publish(f"m{i:04d}", spec_doc(f"m{i:04d}", 1))
        settings: dict[str, Any] = {"log_level": "WARNING", "source": c.source_settings()}
        port = free_port()
        if api:
            settings["api"] = {"enabled": True, "port": port}
        daemon = DaemonHarness(root / "daemon", settings)
        try:
            daemon.start()
            wait_until(lambda: len(daemon.status()["models"]) == models
                       and all(m["applied_revision"] for m in daemon.status()["models"].values()),
                       300, f"{models} models applied", interval=0.5)
            assert daemon.proc is not None
            pid = daemon.proc.pid
            if api:
                for path in ("/healthz", "/status", "/metrics"):
                    httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).raise_for_status()
            time.sleep(2.0)  # let start-up work settle
            cpu0, rss0 = proc_sample(pid)
            t0 = time.monotonic()
            time.sleep(seconds)
            cpu1, rss1 = proc_sample(pid)
            wall = time.monotonic() - t0
            return {"models": models, "api": "on" if api else "off", "idle_cpu_percent": 100 * (cpu1 - cpu0) / wall,
                    "rss_mib": rss1 / 2**20, "rss_growth_kib": (rss1 - rss0) / 1024,
                    "peak_rss_mib": peak_rss(pid) / 2**20, "window_s": round(wall, 1)}
        finally:
            daemon.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="all", choices=["all", "localdir", "etcd", "nacos"])
    p.add_argument("--models", default="1,100,1000")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--api", default="off", choices=["off", "on", "both"])
    args = p.parse_args()
    kinds = ["localdir", "etcd", "nacos"] if args.source == "all" else [args.source]
    counts = [int(x) for x in args.models.split(",")]
    apis = [False, True] if args.api == "both" else [args.api == "on"]
    results = []
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for kind in kinds:
            for n in counts:
                for api in apis:
                    r = idle(kind, Path(tmp) / f"{kind}-{n}-{api}", n, args.seconds, api)
                    results.append({"source": kind, **r})
                    print(f"  {kind} {n} models, api {r['api']}: {r['idle_cpu_percent']:.2f}% CPU, "
                          f"{r['rss_mib']:.1f} MiB", flush=True)
    rows = [[r["source"], r["models"], r["api"], r["idle_cpu_percent"], r["rss_mib"], r["peak_rss_mib"],
             r["rss_growth_kib"]] for r in results]
    text = table(f"idle footprint over {args.seconds:g} s (watch-only daemon)",
                 ["source", "models", "api", "idle CPU %", "RSS MiB", "peak RSS MiB", "RSS growth KiB"], rows)
    cost = import_cost(API_MODULES)
    text += (f"\nimporting the API (after the daemon): {cost['import_ms']:.0f} ms, "
             f"+{cost['rss_kib'] / 1024:.1f} MiB RSS, {cost['modules']:.0f} modules (median of 5)")
    emit("footprint", text, {"seconds": args.seconds, "results": results, "api_import": cost})


if __name__ == "__main__":
    main()
