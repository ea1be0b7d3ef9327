"""Publish-to-applied latency: from a publish to the model server having the new config.

    python -m bench.latency --source etcd --changes 200
    python -m bench.latency --source all --changes 200

For each source, N hot-class changes are published one after another (each waits for the
previous one to arrive, so nothing coalesces); the time is taken from just before the publish
call to the moment the receiver (standing in for the model server's admin API) gets the POST.
In the same run, for etcd, the same measurement for the minimal watcher possible:
`etcdctl watch --prefix KEY -- sh -c 'curl ...'` (Debian etcd-client), and for Nacos a bare
nacos-sdk-python listener forwarding each push (bench/baselines/nacos_listener.py); ratios are
to the baseline of the same center (localdir's to etcdctl's). confd is the other
baseline the issue names; its module is not served by the Go module proxy these machines
reach (403), so it cannot be built here: the output says so.

The daemon runs with its quiescence window at 0 (`--wait-min`), to measure propagation
itself; the default window (0.2 s) adds up to that much by design.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Receiver, emit, latency_stats, spec_doc, table
from bench.sources import Center, EtcdCenter, center
from tests.infra.daemon import DaemonHarness

CONFD_STATUS = "not built: the Go module proxy answers 403 for github.com/kelseyhightower/confd"


def measure(publish: Any, receiver: Receiver, changes: int, first_seq: int, timeout: float = 30) -> list[float]:
    samples = []
    for seq in range(first_seq, first_seq + changes):
        t0 = time.time()
        publish(seq)
        arrived = receiver.wait_for(seq, timeout)
        if arrived is None:
            raise SystemExit(f"change {seq} never arrived within {timeout}s")
        samples.append(arrived - t0)
        time.sleep(0.01)
    return samples


def run_daemon(c: Center, root: Path, changes: int, wait_min: float) -> dict[str, Any]:
    rx = Receiver()
    daemon = DaemonHarness(root / f"daemon-{c.kind}", {
        "log_level": "INFO",
        "source": c.source_settings(),
        "target": {"kind": "http", "url": rx.url + "/admin/reload", "retries": 1},
        "reconcile": {"wait_min": wait_min, "wait_max": max(wait_min, 0.0)},
    })
    try:
        c.publish("bench", spec_doc("bench", 0))
        daemon.start()
        if rx.wait_for(0, 120) is None:
            raise SystemExit(f"{c.kind}: the daemon never applied the first document:\n{daemon.logs()[-2000:]}")
        samples = measure(lambda s: c.publish("bench", spec_doc("bench", s)), rx, changes, 1)
        return latency_stats(samples)
    finally:
        daemon.stop()
        rx.close()


def run_etcdctl(c: EtcdCenter, changes: int) -> dict[str, Any]:
    etcdctl = shutil.which("etcdctl")
    if etcdctl is None:
        return {"status": "etcdctl not installed (Debian etcd-client)"}
    rx = Receiver()
    key = "/bench-baseline/bench"
    cmd = f'printf %s "$ETCD_WATCH_VALUE" | curl -s -o /dev/null -X POST --data-binary @- {rx.url}/'
    proc = subprocess.Popen([etcdctl, "--endpoints", c.cluster.endpoints[0], "watch", key, "--",
                             "sh", "-c", cmd], env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # let the watch register; the first put below also proves it
        c.cluster.put(key, spec_doc("bench", 0))
        if rx.wait_for(0, 30) is None:
            return {"status": "etcdctl watch did not deliver"}
        samples = measure(lambda s: c.cluster.put(key, spec_doc("bench", s)), rx, changes, 1)
        return latency_stats(samples)
    finally:
        proc.terminate()
        proc.wait(10)
        rx.close()


def run_nacos_sdk(c: Any, changes: int) -> dict[str, Any]:
    """The minimal Nacos watcher (one SDK listener forwarding each push) on the same server."""
    import os
    import sys

    rx = Receiver()
    data_id = "bench-baseline.yaml"
    c.server.put(data_id, spec_doc("bench", 0), group=c.group)
    env = {**os.environ, "NACOS_USER": c.server.username, "NACOS_PASSWORD": c.server.password}
    proc = subprocess.Popen([sys.executable, "-m", "bench.baselines.nacos_listener", "--server", c.server.address,
                             "--group", c.group, "--data-id", data_id, "--post", rx.url + "/"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The listener fires first with the current content; then a change proves it is live.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and rx.count == 0:
            c.server.put(data_id, spec_doc("bench", 0) + b"# warm\n", group=c.group)
            time.sleep(1.0)
        if rx.count == 0:
            return {"status": "the SDK listener never delivered"}
        samples = measure(lambda s: c.server.put(data_id, spec_doc("bench", s), group=c.group), rx, changes, 1)
        return latency_stats(samples)
    finally:
        proc.terminate()
        proc.wait(10)
        rx.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="all", choices=["all", "localdir", "etcd", "nacos"])
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--wait-min", type=float, default=0.0)
    args = p.parse_args()
    kinds = ["localdir", "etcd", "nacos"] if args.source == "all" else [args.source]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for kind in kinds:
            with center(kind, Path(tmp) / kind) as c:
                results[f"model-watcher ({kind})"] = run_daemon(c, Path(tmp), args.changes, args.wait_min)
                if isinstance(c, EtcdCenter):
                    results["etcdctl watch + curl (etcd)"] = run_etcdctl(c, args.changes)
                if kind == "nacos":
                    results["nacos-sdk listener + POST (nacos)"] = run_nacos_sdk(c, args.changes)
    results["confd (etcd)"] = {"status": CONFD_STATUS}
    rows = []
    for name, r in results.items():
        if "p50_ms" not in r:
            rows.append([name, "-", "-", "-", "-", "-", r.get("status", "")])
            continue
        # Each source against the minimal watcher of the same center (etcd: etcdctl; Nacos: its SDK).
        base_name = "nacos-sdk listener + POST (nacos)" if "nacos" in name else "etcdctl watch + curl (etcd)"
        base = results.get(base_name, {})
        ratio = (f"{r['p50_ms'] / base['p50_ms']:.2f}x / {r['p99_ms'] / base['p99_ms']:.2f}x"
                 if "p50_ms" in base else "-")
        rows.append([name, r["n"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"], ratio])
    text = table(f"publish-to-applied latency, {args.changes} changes, quiescence wait_min={args.wait_min}s",
                 ["watcher", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "vs baseline p50 / p99"], rows)
    emit("latency", text, {"changes": args.changes, "wait_min": args.wait_min, "results": results})


if __name__ == "__main__":
    main()
