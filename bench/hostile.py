"""Hostile documents: the daemon's peak memory and time to reject the worst cases, side by side
with a valid document of the same size (the baseline, applied in the same run).

    python -m bench.hostile --repeat 5

One fresh daemon per document kind (localdir source, the bench receiver as its http target),
so each kind's peak RSS (VmHWM) is its own. Each kind is written `--repeat` times (a new
revision each time). "verdict ms" is the daemon's own time from taking the revision to
recording its outcome (history seen_at -> finished_at: decode, schema, policy, verify, and for
the valid one the hot swap); "write-to-verdict ms" adds the source's notification and the
quiescence window (wait_min 0). Before the bounded loader, the 500-byte alias bomb took the
daemon past 2 GiB and never reached a verdict (issue 11).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Receiver, emit, peak_rss, table
from tests.infra.daemon import DaemonHarness
from tests.integration.hostile.cases import alias_bomb

LIMIT = 256 * 1024
HEAD = "name: demo\nversion: v1.0.{i}\nmodel:\n  uri: file:///srv/models/demo\n"


def _fill(head: str, item: str, close: str = "") -> bytes:
    """`head` + as many `item`s as fit under the size limit + `close`."""
    room = LIMIT - len(head) - len(close) - 64
    return (head + item * (room // len(item)) + close).encode()


#: name -> document maker (i makes each revision distinct). Each is the worst of its kind
#: that fits under reconcile.max_document_bytes (256 KiB).
KINDS: dict[str, Callable[[int], bytes]] = {
    "alias bomb (9^9 once expanded)": lambda i: alias_bomb().replace(b"v1.99.0", f"v1.99.{i}".encode()),
    "5,001 values (YAML block list)": lambda i: (HEAD.format(i=i) + "  parameters:\n    stop:\n"
                                                  + "".join("      - 0\n" for _ in range(5_001))).encode(),
    "130,000 values (YAML flow list)": lambda i: _fill(HEAD.format(i=i) + "  parameters: {stop: [", "0,", "0]}\n"),
    "130,000 values (JSON array)": lambda i: _fill(f'{{"name": "demo", "version": "v1.0.{i}", "x": [', "0,", "0]}"),
    "nesting 260,000 deep (JSON)": lambda i: _fill(f'{{"v": {i}, "x": ', "[", ""),
    "nesting 260,000 deep (YAML flow)": lambda i: _fill(f"v: {i}\nx: ", "[", ""),
    "one 256 KiB string (valid doc)": lambda i: (HEAD.format(i=i) + "  parameters:\n    prompt: '"
                                                 + "abcdefghij"[i % 10] * (LIMIT - 200) + "'\n").encode(),
}
BASELINE = "one 256 KiB string (valid doc)"


def run_kind(root: Path, name: str, make: Callable[[int], bytes], repeat: int) -> dict[str, Any]:
    models = root / "models"
    models.mkdir(parents=True)
    rx = Receiver()
    daemon = DaemonHarness(root / "daemon", {
        "log_level": "WARNING", "source": {"kind": "localdir", "path": str(models)},
        "target": {"kind": "http", "url": rx.url + "/admin/reload"},
        "reconcile": {"wait_min": 0.0, "wait_max": 0.0},
    })
    try:
        daemon.start()
        assert daemon.proc is not None
        _write(models, HEAD.format(i=0).encode())  # warm-up: every code path of an apply loaded
        _wait_verdict(daemon, 1)
        idle = peak_rss(daemon.proc.pid)
        verdicts, walls, outcomes, size = [], [], set(), 0
        for i in range(1, repeat + 1):
            raw = make(i)
            size = len(raw)
            started = time.monotonic()
            _write(models, raw)
            row = _wait_verdict(daemon, i + 1)
            walls.append(time.monotonic() - started)
            verdicts.append(row["finished_at"] - row["seen_at"])
            outcomes.add(row["outcome"])
        peak = peak_rss(daemon.proc.pid)
        return {"document": name, "bytes": size, "outcome": "/".join(sorted(outcomes)),
                "verdict_ms": 1000 * statistics.median(verdicts), "verdict_max_ms": 1000 * max(verdicts),
                "write_to_verdict_ms": 1000 * statistics.median(walls), "idle_peak_mib": idle / 2**20,
                "peak_rss_mib": peak / 2**20, "growth_mib": (peak - idle) / 2**20,
                "reason": row.get("reason") or ""}
    finally:
        daemon.stop()
        rx.close()


def _write(models: Path, raw: bytes) -> None:
    (models / ".demo.swp").write_bytes(raw)
    (models / ".demo.swp").replace(models / "demo.yaml")


def _wait_verdict(daemon: DaemonHarness, n: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r for r in daemon.history("demo") if r["outcome"] not in ("pending", None)]
        if len(rows) >= n:
            return rows[0]
        time.sleep(0.005)
    raise TimeoutError(f"no verdict on revision {n} within {timeout}s:\n{daemon.logs()[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for k, (name, make) in enumerate(KINDS.items()):
            r = run_kind(Path(tmp) / f"k{k}", name, make, args.repeat)
            results.append(r)
            print(f"  {name}: {r['outcome']} in {r['verdict_ms']:.1f} ms, peak {r['peak_rss_mib']:.1f} MiB",
                  flush=True)
    rows = [[r["document"], r["bytes"], r["outcome"], r["verdict_ms"], r["verdict_max_ms"],
             r["write_to_verdict_ms"], r["peak_rss_mib"], r["growth_mib"]] for r in results]
    text = table(f"hostile documents vs a valid one of the same size (median of {args.repeat}, localdir)",
                 ["document", "bytes", "outcome", "verdict ms", "max ms", "write-to-verdict ms",
                  "daemon peak RSS MiB", "over idle MiB"], rows)
    emit("hostile", text, {"repeat": args.repeat, "baseline": BASELINE, "results": results})


if __name__ == "__main__":
    main()
