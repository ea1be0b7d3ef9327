"""Scale: 1,000 models, a burst of 10,000 publishes across them, through the real daemon.

    python -m bench.scale --source etcd --models 1000 --publishes 10000

Reports the time from the first publish until every model's last publish has reached the
receiver (the model server stand-in), and how much of it came after the last publish (the
backlog the daemon still had when the burst ended), whether every model ended at its last revision, how
many applies that took (coalescing: far fewer than publishes), and the daemon's peak RSS.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import Receiver, emit, peak_rss, spec_doc, table
from bench.sources import center
from tests.infra.daemon import DaemonHarness


def burst(kind: str, root: Path, models: int, publishes: int, threads: int) -> dict[str, Any]:
    rng = random.Random(42)
    names = [f"m{i:04d}" for i in range(models)]
    with center(kind, root / "center") as c:
        rx = Receiver()
        # The source's default full re-read stays on here: a burst may overflow the kernel's
        # inotify queue, and the periodic re-read is what makes lost events good again.
        source = {k: v for k, v in c.source_settings().items() if k != "resync_interval"}
        for i, name in enumerate(names):  # everything exists and is applied before the burst
            c.publish(name, spec_doc(name, i))
        daemon = DaemonHarness(root / "daemon", {
            "log_level": "WARNING", "source": source,
            "target": {"kind": "http", "url": rx.url + "/admin/reload", "retries": 1},
            "reconcile": {"wait_min": 0.2, "wait_max": 2.0},
        })
        try:
            daemon.start()
            deadline = time.monotonic() + 600
            while len(rx.last_by_name) < models and time.monotonic() < deadline:
                time.sleep(0.2)
            if len(rx.last_by_name) < models:
                raise SystemExit(f"only {len(rx.last_by_name)}/{models} models applied at start")
            before = rx.count
            plan = [(rng.choice(names), models + k) for k in range(publishes)]
            final = {name: seq for name, seq in plan}
            t0 = time.monotonic()
            # Publishes of one model stay in order (one thread per model bucket).
            buckets: dict[int, list[tuple[str, int]]] = {}
            for name, seq in plan:
                buckets.setdefault(hash(name) % threads, []).append((name, seq))

            def run(items: list[tuple[str, int]]) -> None:
                for n, s in items:
                    c.publish(n, spec_doc(n, s))

            many = getattr(c, "publish_many", None)
            if many is not None:  # etcd: transactions of distinct keys, in publish order
                many([(n, spec_doc(n, s)) for n, s in plan])
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, buckets.values()))
            published_in = time.monotonic() - t0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if all(rx.last_by_name.get(n, -1) == s for n, s in final.items()):
                    break
                time.sleep(0.05)
            converged = time.monotonic() - t0
            correct = sum(1 for n, s in final.items() if rx.last_by_name.get(n) == s)
            assert daemon.proc is not None
            return {"source": kind, "models": models, "publishes": publishes,
                    "published_in_s": published_in, "converged_in_s": converged,
                    "settled_after_burst_s": converged - published_in,
                    "models_correct": correct, "applies": rx.count - before,
                    "peak_rss_mib": peak_rss(daemon.proc.pid) / 2**20}
        finally:
            daemon.stop()
            rx.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="all", choices=["all", "localdir", "etcd", "nacos"])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--publishes", type=int, default=10000)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    kinds = ["localdir", "etcd", "nacos"] if args.source == "all" else [args.source]
    results = []
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for kind in kinds:
            results.append(burst(kind, Path(tmp) / kind, args.models, args.publishes, args.threads))
    rows = [[r["source"], r["models"], r["publishes"], r["published_in_s"], r["converged_in_s"],
             r["settled_after_burst_s"],
             f"{r['models_correct']}/{r['models']}", r["applies"], r["peak_rss_mib"]] for r in results]
    text = table("burst across many models (quiescence 0.2 s / 2 s)",
                 ["source", "models", "publishes", "published in s", "converged in s",
                  "after the last publish s", "at last revision",
                  "applies", "peak RSS MiB"], rows)
    emit("scale", text, {"results": results})


if __name__ == "__main__":
    main()
