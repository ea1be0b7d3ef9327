"""Each benchmark at a smoke size, so CI keeps them working. Asserts they run and print
their table and JSON; never asserts on the figures (benchmarks are not timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.infra.common import ROOT

SMOKE = [
    ("latency", ["--source", "all", "--changes", "5"], "publish-to-applied latency"),
    ("footprint", ["--source", "etcd", "--models", "1,10", "--seconds", "1", "--api", "both"], "idle footprint"),
    ("scale", ["--source", "localdir", "--models", "10", "--publishes", "100"], "burst across many models"),
    ("fanout", ["--daemons", "3"], "fan-out: 3 daemons"),
    ("fleet", ["--daemons", "3"], "fleet rollout: 3 daemons"),
    ("availability", [], "availability during updates"),
    ("weights", ["--size-mb", "8", "--repeat", "1"], "weights download throughput"),
    ("hostile", ["--repeat", "1"], "hostile documents vs a valid one"),
]


@pytest.mark.parametrize(("name", "args", "title"), SMOKE, ids=[s[0] for s in SMOKE])
def test_benchmark_runs_and_prints_its_table_and_json(name: str, args: list[str], title: str) -> None:
    out = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert title in out.stdout
    data = json.loads(out.stdout[out.stdout.index("\n{") + 1:])
    assert data["benchmark"] == name and data["machine"]["cpus"] >= 1
