"""Fan-out: N daemons (separate processes) watching one etcd; one publish; time until all applied.

    python -m bench.fanout --daemons 200

Each daemon runs watch-only (no target: it records the revision, which is what watching
costs). Reported: time from the publish until the last daemon committed it (from each
daemon's own state), the spread, the daemons' summed RSS, and etcd's own load (CPU seconds
and RSS of the etcd process over the run, and its watcher count).
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit, latency_stats, proc_sample, spec_doc, table
from tests.infra.daemon import to_toml
from tests.infra.etcd import EtcdCluster

PREFIX = "/model-watcher/models/"


def applied_at(db: Path, revision: str) -> float | None:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT applied_at FROM applied WHERE model='fan' AND revision=?",
                              (revision,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return float(row[0]) if row else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--daemons", type=int, default=200)
    args = p.parse_args()
    n = args.daemons
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        root = Path(tmp)
        etcd = EtcdCluster(root / "etcd").start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            etcd.put(PREFIX + "fan", spec_doc("fan", 0))
            dbs = []
            for i in range(n):
                d = root / f"d{i}"
                d.mkdir()
                (d / "watcher.toml").write_text(to_toml({
                    "state_dir": str(d / "state"), "log_level": "WARNING", "log_format": "json",
                    "source": {"kind": "etcd", "endpoints": etcd.endpoints, "prefix": PREFIX,
                               "resync_interval": 0},
                    "reconcile": {"wait_min": 0.0, "wait_max": 0.0}}))
                dbs.append(d / "state" / "state.db")
                procs.append(subprocess.Popen([sys.executable, "-m", "watcher", "--config", str(d / "watcher.toml"),
                                               "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            first = str(etcd.revision())
            deadline = time.monotonic() + 60 + 2 * n
            while time.monotonic() < deadline and any(applied_at(db, first) is None for db in dbs):
                time.sleep(0.5)
            ready = sum(applied_at(db, first) is not None for db in dbs)
            member = etcd.members[0].proc
            assert member is not None
            etcd_pid = member.pid
            cpu0, _ = proc_sample(etcd_pid)
            time.sleep(2.0)  # settle
            t0 = time.time()
            revision = str(etcd.put(PREFIX + "fan", spec_doc("fan", 1)))
            deadline = time.monotonic() + 120
            times: list[float | None] = [None] * n
            while time.monotonic() < deadline and any(t is None for t in times):
                times = [t if t is not None else applied_at(db, revision) for t, db in zip(times, dbs, strict=True)]
                time.sleep(0.05)
            cpu1, etcd_rss = proc_sample(etcd_pid)
            got = [t - t0 for t in times if t is not None]
            rss = sum(proc_sample(pr.pid)[1] for pr in procs if pr.poll() is None)
            import httpx

            metrics = httpx.get(etcd.members[0].url + "/metrics", timeout=5).text
            watch_streams = next((float(ln.split()[-1]) for ln in metrics.splitlines()
                                  if ln.startswith("etcd_debugging_mvcc_watch_stream_total ")), float("nan"))
        finally:
            for pr in procs:
                pr.terminate()
            for pr in procs:
                try:
                    pr.wait(15)
                except subprocess.TimeoutExpired:
                    pr.kill()
            etcd.stop()
    stats = latency_stats(got)
    result: dict[str, Any] = {"daemons": n, "ready_before_publish": ready, "applied": len(got), **stats,
                              "daemons_rss_mib_total": rss / 2**20, "daemon_rss_mib_mean": rss / 2**20 / max(n, 1),
                              "etcd_cpu_s_during": cpu1 - cpu0, "etcd_rss_mib": etcd_rss / 2**20,
                              "etcd_watch_streams": watch_streams}
    text = table(f"fan-out: {n} daemons on one etcd, one publish", ["metric", "value"],
                 [[k, v] for k, v in result.items()])
    emit("fanout", text, result)


if __name__ == "__main__":
    main()
