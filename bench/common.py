"""What every benchmark shares: a receiver that timestamps what reaches the "model server",
the real daemon as a subprocess, /proc sampling, percentiles, and the table + JSON output.

Benchmarks print figures; they never assert on them. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SEQ = re.compile(rb'"?seq"?\s*:\s*(\d+)')
NAME = re.compile(rb'"?name"?\s*:\s*"?([A-Za-z0-9._-]+)')
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Receiver:
    """A loopback HTTP server standing in for the model server's admin endpoint.

    Every POST is timestamped on arrival and keyed by the `seq` number found in its body
    (the daemon posts the spec as JSON, the baselines post the raw document): so the time
    from publish to "the model server has the new config" is measured the same way for all.
    """

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.last_by_name: dict[str, int] = {}
        self.count = 0
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            # keep-alive, as a model server's admin endpoint would: a new TCP connection per
            # POST measured the stand-in's socket setup, not the daemon
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                now = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                m = SEQ.search(body)
                n = NAME.search(body)
                with outer._cond:
                    outer.count += 1
                    if m:
                        outer.arrivals.setdefault(int(m.group(1)), now)
                        if n:  # highest wins: a late, timed-out older POST must not count as newest
                            name, seq = n.group(1).decode(), int(m.group(1))
                            outer.last_by_name[name] = max(seq, outer.last_by_name.get(name, -1))
                    outer._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, seq: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.arrivals[seq]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def spec_doc(name: str, seq: int, version: str = "v1.0.0") -> bytes:
    """A hot-class change per `seq` (model.parameters.seq)."""
    return (f"name: {name}\nversion: {version}\nmodel:\n  uri: file:///srv/models/{name}\n"
            f"  parameters:\n    seq: {seq}\n").encode()


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else float("nan"),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, RSS bytes) of a process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK
    rss = int(stat[21]) * PAGE
    return cpu, rss


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": round(int(mem) / 2**20, 1),
            "python": sys.version.split()[0]}


def emit(name: str, text: str, data: dict[str, Any]) -> Path:
    """Print the table and the JSON; keep the JSON under bench/results/."""
    data = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "command": " ".join(["python", "-m", f"bench.{name}", *sys.argv[1:]]), **data}
    print(text)
    print(json.dumps(data, indent=2, default=str))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{int(time.time())}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
