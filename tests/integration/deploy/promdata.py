"""Helpers for checking deploy/prometheus and deploy/grafana against what a real daemon exports.

`exported_names` reads the families of an exposition (also those without samples yet);
`metric_names` finds the metric names a PromQL expression uses; `promtool` runs Debian's
promtool (scripts/deps/75-deploy.sh) and fails the test with its output.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.infra.common import require_binary

PROMTOOL_HINT = "Debian package prometheus (scripts/deps/75-deploy.sh)"
_NAME = re.compile(r"\bmodel_watcher_[a-z0-9_]+\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

Sample = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Sample, float]:
    """(sample name, sorted labels) -> value of one /metrics exposition."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exported_names(text: str) -> set[str]:
    """Every name a query may use: each family's samples' names, also for families that
    have no sample yet (a labelled counter before its first increment)."""
    names = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in (*_HISTOGRAM_SUFFIXES, "_created")}
        else:
            names.add(family.name)
        names |= {s.name for s in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def promtool(*args: str | Path, cwd: Path | None = None) -> str:
    binary = require_binary("promtool", PROMTOOL_HINT)
    proc = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=cwd)
    assert proc.returncode == 0, f"promtool {args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
