"""deploy/grafana/model-watcher.json against a real daemon: every query names only metrics the
daemon exports (its /metrics after the conftest.SCENARIO steps; the fleet's families are
exported by every daemon, empty off a fleet), and every query is valid PromQL (promtool checks them as
recording rules, with Grafana's variables substituted)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.infra.common import ROOT
from tests.integration.deploy.promdata import exported_names, metric_names, promtool

DASHBOARD = ROOT / "deploy" / "grafana" / "model-watcher.json"
#: Grafana's variables -> something PromQL accepts
VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m",
             "$job": ".*", "$instance": ".*", "$model": ".*"}


def panels(items: list[dict[str, Any]], row: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(title of the row it sits in, panel) for every panel, collapsed rows' included."""
    for p in items:
        if p.get("type") == "row":
            yield from panels(p.get("panels", []), p["title"])
            row = p["title"]
        else:
            yield row, p


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(row, panel title, expr) of every query, the template variables' included."""
    out = [(row, p["title"], t["expr"]) for row, p in panels(dashboard["panels"])
           for t in p.get("targets", [])]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            expr = re.fullmatch(r"label_values\((.+), \w+\)", v["definition"])
            assert expr, v["definition"]
            out.append(("variables", v["name"], expr.group(1)))
    return out


def substitute(expr: str) -> str:
    for k in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(k, VARIABLES[k])
    assert "$" not in expr, expr
    return expr


def test_dashboard_queries_use_exported_metrics(daemon_scrapes: list[tuple[str, str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names(daemon_scrapes[-1][1])
    found = queries(dashboard)
    assert len(found) >= 20
    for row, title, expr in found:
        names = metric_names(expr)
        assert names, f"{title}: no model_watcher metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{row} / {title}: not exported by the daemon: {sorted(unknown)}"
    # what the issue asks to see per model
    used = set().union(*(metric_names(e) for _, _, e in found))
    assert {"model_watcher_applied_info", "model_watcher_revisions_total",
            "model_watcher_apply_duration_seconds_bucket", "model_watcher_source_up",
            "model_watcher_alerts_sent_total", "model_watcher_rollout_step",
            "model_watcher_rollout_transitions_total"} <= used


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr)}
             for i, (_, _, expr) in enumerate(queries(dashboard))]
    path = tmp_path / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", path)


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "model-watcher" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for _, p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for _, p in panels(dashboard["panels"]):
        if p.get("targets"):
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
