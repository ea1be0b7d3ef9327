"""deploy/prometheus/model-watcher.rules.yml under promtool: syntax (`check rules`), the
hand-written unit tests, and a unit test whose series are a real daemon's /metrics scraped
after applied, rejected, failed, applied-again and source-down steps (conftest.SCENARIO):
each scrape is held for some minutes of the test's timeline, and the alerts that must (and
must not) fire at given minutes are checked, labels and rendered annotations included."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.infra.common import ROOT
from tests.integration.deploy.conftest import SCENARIO
from tests.integration.deploy.promdata import (
    Sample,
    exported_names,
    metric_names,
    promtool,
    samples,
)

RULES = ROOT / "deploy" / "prometheus" / "model-watcher.rules.yml"
UNIT_TESTS = ROOT / "deploy" / "prometheus" / "model-watcher.test.yml"
#: what Prometheus adds to every scraped series
TARGET = {"job": "model-watcher", "instance": "sidecar:9464"}
#: minutes each scrape's values are held on the test's timeline, in SCENARIO order
HOLD = {"applied": 5, "rejected": 20, "failed": 5, "applied again": 5, "source down": 10}


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def render(template: str, labels: dict[str, str]) -> str:
    """The annotations use only `{{ $labels.NAME }}` (kept that simple on purpose)."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    assert "{{" not in out, f"annotation uses more than $labels: {template!r}"
    return out


def alert(name: str, **labels: str) -> dict[str, Any]:
    rule = rules()[name]
    full = {**labels, **rule["labels"]}
    annotations = {k: render(v, {**full, "alertname": name}) for k, v in rule["annotations"].items()}
    return {"exp_labels": full, "exp_annotations": annotations}


def series_name(sample: Sample) -> str:
    name, labels = sample
    escaped = {**dict(labels), **TARGET}
    body = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in sorted(escaped.items()))
    return f"{name}{{{body}}}"


def input_series(scrapes: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Every series of every scrape, one sample per minute ('_' where it did not exist)."""
    per_step = [(step, samples(text)) for step, text in scrapes]
    keys = sorted({k for _, s in per_step for k in s})
    out = []
    for key in keys:
        values = []
        for step, s in per_step:
            value = repr(s[key]) if key in s else "_"
            values += [value] * HOLD[step]
        out.append({"series": series_name(key), "values": " ".join(values)})
    return out


def start(step: str) -> int:
    """Minute at which `step`'s scrape starts on the timeline."""
    return sum(HOLD[s] for s in SCENARIO[:SCENARIO.index(step)])


def test_rules_are_valid_and_use_exported_metrics(daemon_scrapes: list[tuple[str, str]]) -> None:
    promtool("check", "rules", RULES)
    exported = exported_names(daemon_scrapes[-1][1])
    used = set().union(*(metric_names(r["expr"]) for r in rules().values()))
    assert used <= exported, sorted(used - exported)
    assert set(rules()) >= {"ModelUpdateFailed", "ModelBehindConfigCenter", "ModelWatcherSourceDown",
                            "ModelRolledBack", "ModelRolloutAborted"}


def test_hand_written_rule_tests() -> None:
    out = promtool("test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert "SUCCESS" in out


def test_rules_on_a_real_daemons_series(daemon_scrapes: list[tuple[str, str]], tmp_path: Path) -> None:
    demo = {**TARGET, "model": "demo"}
    failed = start("failed")
    behind_from = start("rejected") + 15          # refused, nothing applied since, for 15m
    down_from = start("source down") + 5
    expectations: list[tuple[int, str, list[dict[str, Any]]]] = [
        (start("rejected") + 1, "ModelUpdateFailed", []),
        (behind_from - 1, "ModelBehindConfigCenter", []),
        (behind_from + 1, "ModelBehindConfigCenter", [alert("ModelBehindConfigCenter", **demo)]),
        (failed + 1, "ModelUpdateFailed", [alert("ModelUpdateFailed", **demo, outcome="failed",
                                                 reason="health_gate")]),
        (failed + 1, "ModelRolledBack", [alert("ModelRolledBack", **demo, by="daemon")]),
        (start("applied again") + 1, "ModelBehindConfigCenter", []),
        (down_from - 1, "ModelWatcherSourceDown", []),
        (down_from + 1, "ModelWatcherSourceDown", [alert("ModelWatcherSourceDown", **TARGET)]),
        (down_from + 1, "ModelWatcherNotReady", []),
        (down_from + 1, "ModelRolloutAborted", []),
    ]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": input_series(daemon_scrapes),
            "alert_rule_test": [{"eval_time": f"{t}m", "alertname": name, "exp_alerts": exp}
                                for t, name, exp in expectations],
        }],
    }
    path = tmp_path / "real-daemon.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    out = promtool("test", "rules", path)
    assert "SUCCESS" in out
