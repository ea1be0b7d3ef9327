"""Fleet rollouts next to today's all-at-once fan-out, same daemons, same machine, same run.

    python -m bench.fleet --daemons 200

N daemons (separate processes) on one etcd member, each hot-swapping "its" model server
with a health gate. The servers are one stand-in process here (`Tenants`: a loopback HTTP
server keeping one spec per member and answering each member's /health from it), because
200 real servers beside 200 daemons do not fit 2 cores; what is measured is the
coordination, and the stand-in logs which member's server received which version.

    all-at-once   the daemons without [fleet] (today): one publish; time until all applied
    fleet, good   the same daemons with [fleet] (SIGHUP), `publish --rollout` with steps
                  5/10/30/60/100 and soak 0: time until all applied, and per step
    fleet, bad    `publish --rollout` of a revision failing its health gate: how many members
                  ever ran it (their servers' view), time until the rollout aborted

For each phase: etcd's and the daemons' CPU seconds; at the end etcd's watch streams and keys.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.common import emit, latency_stats, proc_sample, spec_doc, table
from bench.fanout import applied_at
from tests.infra.daemon import to_toml
from tests.infra.etcd import EtcdCluster
from watcher.fleet.publish import publish_with_rollout
from watcher.fleet.record import parse_policy
from watcher.settings import load_settings
from watcher.sources.etcd import EtcdOptions, EtcdSource

PREFIX = "/model-watcher/models/"
FLEET = "/model-watcher/fleet/"
PATH = re.compile(r"^/t/([A-Za-z0-9._-]+)/(admin/reload|health)$")


class Tenants:
    """One spec per member; /t/<member>/health answers 503 while it has `fail_health`."""

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}
        self.received: list[tuple[str, str, float]] = []  # (member, version, at)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                m = PATH.match(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not m or m.group(2) != "admin/reload":
                    return self._answer(404)
                spec = json.loads(body)
                outer.specs[m.group(1)] = spec
                outer.received.append((m.group(1), str(spec.get("version")), time.time()))
                return self._answer(200)

            def do_GET(self) -> None:
                m = PATH.match(self.path)
                if not m or m.group(2) != "health":
                    return self._answer(404)
                params = (outer.specs.get(m.group(1), {}).get("model") or {}).get("parameters") or {}
                return self._answer(503 if params.get("fail_health") else 200)

        ThreadingHTTPServer.request_queue_size = 512
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reached(self, version: str) -> set[str]:
        return {m for m, v, _ in self.received if v == version}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_applied(dbs: list[Path], revision: str, timeout: float) -> list[float | None]:
    deadline = time.monotonic() + timeout
    times: list[float | None] = [None] * len(dbs)
    while time.monotonic() < deadline and any(t is None for t in times):
        times = [t if t is not None else applied_at(db, revision) for t, db in zip(times, dbs, strict=True)]
        time.sleep(0.05)
    return times


def settings(d: Path, i: int, etcd: EtcdCluster, tenants: Tenants, fleet: bool) -> dict[str, Any]:
    member = f"m{i:03d}"
    out: dict[str, Any] = {
        "state_dir": str(d / "state"), "log_level": "WARNING", "log_format": "json",
        "source": {"kind": "etcd", "endpoints": etcd.endpoints, "prefix": PREFIX, "resync_interval": 0},
        "reconcile": {"wait_min": 0.0, "wait_max": 0.0},
        "target": {"kind": "http", "url": f"{tenants.url}/t/{member}/admin/reload", "timeout": 10},
        "health": {"url": f"{tenants.url}/t/{member}/health", "period": 0.1, "failure_threshold": 3,
                   "latency_ms": 5000, "timeout": 5},
    }
    if fleet:
        out["fleet"] = {"enabled": True, "member_id": member, "ttl": 10, "probe_interval": 5}
    return out


class Bench:
    def __init__(self, root: Path, n: int) -> None:
        self.root, self.n = root, n
        self.etcd = EtcdCluster(root / "etcd").start()
        self.tenants = Tenants()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dbs: list[Path] = []
        member = self.etcd.members[0].proc
        assert member is not None
        self.etcd_pid = member.pid

    def configure(self, fleet: bool) -> None:
        for i in range(self.n):
            d = self.root / f"d{i}"
            d.mkdir(exist_ok=True)
            (d / "watcher.toml").write_text(to_toml(settings(d, i, self.etcd, self.tenants, fleet)))

    def start(self) -> None:
        self.configure(False)
        for i in range(self.n):
            d = self.root / f"d{i}"
            self.dbs.append(d / "state" / "state.db")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "watcher", "--config", str(d / "watcher.toml"), "run"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _range(self, key: str, end: str | None = None, **extra: object) -> dict[str, Any]:
        body: dict[str, Any] = {"key": base64.b64encode(key.encode()).decode(), **extra}
        if end is not None:
            body["range_end"] = base64.b64encode(end.encode()).decode()
        data: dict[str, Any] = httpx.post(self.etcd.endpoints[0] + "/v3/kv/range", json=body,
                                          timeout=10).json()
        return data

    def range_count(self, prefix: str) -> int:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return int(self._range(prefix, end, count_only=True).get("count", 0))

    def record(self) -> dict[str, Any] | None:
        kvs = self._range(FLEET + "rollouts/fan").get("kvs") or []
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None

    def publish(self, content: bytes, rollout: str | None = None) -> tuple[str, float]:
        """Publish in-process (the CLI's own code path, without its interpreter start-up, so
        that t0 is the write): returns the revision and the time just before the writes."""
        settings = load_settings(self.root / "d0" / "watcher.toml").model_copy(
            update={"fleet": {"enabled": True}})

        async def write() -> tuple[str, float]:
            source = EtcdSource(EtcdOptions(endpoints=self.etcd.endpoints, prefix=PREFIX))
            try:
                t0 = time.time()
                if rollout is None:
                    return await source.publish("fan", content), t0
                revision, _ = await publish_with_rollout(settings, source, "fan", content, "v1",
                                                         parse_policy(rollout), None)
                return revision, t0
            finally:
                await source.aclose()

        return asyncio.run(write())

    def etcd_cpu(self) -> float:
        return proc_sample(self.etcd_pid)[0]

    def daemons_cpu(self) -> float:
        """CPU seconds all daemons used so far (those still running)."""
        return sum(proc_sample(p.pid)[0] for p in self.procs if p.poll() is None)

    def etcd_metrics(self) -> dict[str, float]:
        text = httpx.get(self.etcd.endpoints[0] + "/metrics", timeout=5).text
        wanted = ("etcd_debugging_mvcc_watch_stream_total", "etcd_debugging_mvcc_watcher_total",
                  "etcd_debugging_mvcc_keys_total", "etcd_debugging_lease_granted_total")
        out = {}
        for line in text.splitlines():
            name = line.split(" ")[0]
            if name in wanted:
                out[name.removeprefix("etcd_debugging_")] = float(line.split()[-1])
        return out

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.tenants.close()
        self.etcd.stop()


def run_phases(b: Bench, n: int) -> dict[str, Any]:
    first, _ = b.publish(spec_doc("fan", 0))
    ready = sum(t is not None for t in wait_applied(b.dbs, first, 60 + 2 * n))
    time.sleep(2.0)
    result: dict[str, Any] = {"daemons": n, "ready": ready}

    cpu, dcpu = b.etcd_cpu(), b.daemons_cpu()
    revision, t0 = b.publish(spec_doc("fan", 1, "v1.0.1"))
    got = [t - t0 for t in wait_applied(b.dbs, revision, 120) if t is not None]
    result["all_at_once"] = {**latency_stats(got), "etcd_cpu_s": b.etcd_cpu() - cpu,
                             "daemons_cpu_s": b.daemons_cpu() - dcpu}

    b.configure(True)  # the same daemons join a fleet: SIGHUP starts the fleet feature
    for p in b.procs:
        p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60 + n
    while time.monotonic() < deadline and b.range_count(FLEET + "members/") < n:
        time.sleep(0.5)
    result["members"] = b.range_count(FLEET + "members/")
    time.sleep(2.0)

    cpu, dcpu = b.etcd_cpu(), b.daemons_cpu()
    revision, t0 = b.publish(spec_doc("fan", 2, "v1.0.2"), "{steps: [5, 10, 30, 60, 100], soak: 0}")
    got = [t - t0 for t in wait_applied(b.dbs, revision, 300) if t is not None]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (b.record() or {}).get("phase") != "completed":
        time.sleep(0.1)
    record = b.record() or {}
    steps = [round(h["started_at"] - t0, 3) for h in record.get("history", [])]
    result["fleet_good"] = {**latency_stats(got), "phase": record.get("phase"), "step_starts_s": steps,
                            "etcd_cpu_s": b.etcd_cpu() - cpu, "daemons_cpu_s": b.daemons_cpu() - dcpu}

    cpu, dcpu = b.etcd_cpu(), b.daemons_cpu()
    bad = spec_doc("fan", 3, "v1.0.3").replace(b"seq: 3", b"seq: 3\n    fail_health: true")
    revision, t0 = b.publish(bad, "{steps: [5, 10, 30, 60, 100], soak: 0}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (b.record() or {}).get("phase") != "aborted":
        time.sleep(0.2)
    aborted_after = time.time() - t0
    time.sleep(3.0)  # members still finishing their failed apply report it
    record = b.record() or {}
    result["fleet_bad"] = {"phase": record.get("phase"), "aborted_after_s": aborted_after,
                           "first_cohort": max(1, -(-5 * len(record.get("members", [])) // 100)),
                           "ran_it": len(b.tenants.reached("v1.0.3")), "etcd_cpu_s": b.etcd_cpu() - cpu,
                           "daemons_cpu_s": b.daemons_cpu() - dcpu}
    result["etcd"] = b.etcd_metrics()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--daemons", type=int, default=200)
    args = p.parse_args()
    n = args.daemons
    with tempfile.TemporaryDirectory(prefix="mw-bench-fleet-") as tmp:
        b = Bench(Path(tmp), n)
        try:
            b.start()
            result = run_phases(b, n)
        finally:
            b.close()
    a, g, bad = result["all_at_once"], result["fleet_good"], result["fleet_bad"]
    cpu = [f"{a['etcd_cpu_s']:.2f}", f"{a['daemons_cpu_s']:.1f}"]
    rows = [["all-at-once (no fleet)", f"{a['n']}/{n}", f"{a['p50_ms']:.0f}", f"{a['max_ms']:.0f}", "-", *cpu]]
    cpu = [f"{g['etcd_cpu_s']:.2f}", f"{g['daemons_cpu_s']:.1f}"]
    rows.append(["fleet, good, soak 0", f"{g['n']}/{n}", f"{g['p50_ms']:.0f}", f"{g['max_ms']:.0f}", g["phase"], *cpu])
    cpu = [f"{bad['etcd_cpu_s']:.2f}", f"{bad['daemons_cpu_s']:.1f}"]
    rows.append(["fleet, bad revision", f"{bad['ran_it']} ran it (first cohort {bad['first_cohort']})",
                 "-", f"{bad['aborted_after_s'] * 1000:.0f} (abort)", bad["phase"], *cpu])
    text = table(f"fleet rollout: {n} daemons on one etcd, side by side with all-at-once",
                 ["row", "applied", "p50 ms", "max ms", "rollout", "etcd CPU s", "daemons CPU s"], rows)
    text += f"\nstep starts (s after publish): {g['step_starts_s']}; etcd: {result['etcd']}"
    emit("fleet", text, result)


if __name__ == "__main__":
    main()
