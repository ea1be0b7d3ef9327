"""Run the example publisher pipelines' script steps as CI would, taken from their YAML.

The steps are extracted from examples/pipelines/*.yml, never copied: GitLab jobs in stage
order (each job's `script`, with the file's and the job's `variables`), GitHub Actions steps
in order (each `run`, with the workflow's, job's and step's `env`; `${{ secrets.X }}`,
`${{ vars.X }}` and `${{ github.X }}` resolved from what the test gives, anything else
refused). Not run: the install (`before_script`, the step named "Install ...") and `uses:`
actions (checkout, setup-python, upload-artifact), which need GitHub's or GitLab's hosts;
the project's own venv stands in for the install. Each script runs in one workspace
(artifacts pass between jobs as files) with `bash -eo pipefail`, as both CI systems do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.infra.common import ROOT

PIPELINES = ROOT / "examples" / "pipelines"
GITLAB = PIPELINES / "gitlab-ci.yml"
GITHUB = PIPELINES / "github-publish-model.yml"
_GITLAB_RESERVED = {"stages", "variables", "default", "workflow", "include", "image", "services",
                    "before_script", "after_script", "cache"}
_SKIPPED_ACTIONS = ("actions/checkout@", "actions/setup-python@", "actions/upload-artifact@")
_EXPRESSION = re.compile(r"\$\{\{\s*([a-z_]+\.[A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    env: dict[str, str]


def gitlab_steps(path: Path = GITLAB) -> list[Step]:
    doc = yaml.safe_load(path.read_text())
    stages: list[str] = doc["stages"]
    install = doc["default"]["before_script"]
    assert all("pip install" in line for line in install), f"before_script is not only the install: {install}"
    variables = {k: str(v) for k, v in doc.get("variables", {}).items()}
    jobs = [(name, job) for name, job in doc.items()
            if name not in _GITLAB_RESERVED and not name.startswith(".")]
    jobs.sort(key=lambda item: stages.index(item[1]["stage"]))
    assert [job["stage"] for _, job in jobs] == stages, "one job per stage, in order"
    return [Step(name, "\n".join(job["script"]),
                 {**variables, **{k: str(v) for k, v in job.get("variables", {}).items()}})
            for name, job in jobs]


def github_steps(context: Mapping[str, str], path: Path = GITHUB) -> list[Step]:
    doc = yaml.safe_load(path.read_text())

    def resolve(env: Mapping[str, Any]) -> dict[str, str]:
        def value(m: re.Match[str]) -> str:
            assert m.group(1) in context, f"{path.name}: no value for ${{{{ {m.group(1)} }}}}"
            return context[m.group(1)]

        return {k: _EXPRESSION.sub(value, str(v)) for k, v in env.items()}

    top = resolve(doc.get("env", {}))
    steps = []
    for job_id, job in doc["jobs"].items():
        assert "needs" not in job, "one job (a multi-job workflow would need artifacts)"
        job_env = {**top, **resolve(job.get("env", {}))}
        for step in job["steps"]:
            if "uses" in step:
                assert step["uses"].startswith(_SKIPPED_ACTIONS), step["uses"]
                continue
            if step["name"].startswith("Install"):
                continue
            assert "${{" not in step["run"], f"{step['name']}: pass expressions through env"
            steps.append(Step(f"{job_id}/{step['name']}", step["run"],
                              {**job_env, **resolve(step.get("env", {}))}))
    return steps


def run_pipeline(steps: list[Step], workspace: Path, overrides: Mapping[str, str],
                 stop_after: str | None = None) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    """Run `steps` in `workspace` until one fails (or `stop_after` ran). `overrides` are
    the CI system's project variables and secrets: they win over the file's values."""
    venv_bin = str(Path(sys.executable).parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_WATCHER_")
            or k == "MODEL_WATCHER_TEST_CACHE"}
    base["PATH"] = f"{venv_bin}:{base.get('PATH', '')}"
    results = []
    for step in steps:
        env = {**base, **step.env, **overrides}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.script],
                              cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
        results.append((step.name, proc))
        if proc.returncode != 0 or step.name == stop_after:
            break
    return results


def failed(results: list[tuple[str, subprocess.CompletedProcess[str]]]) -> str | None:
    """The name of the step that failed, or None."""
    return next((name for name, p in results if p.returncode != 0), None)


def transcript(results: list[tuple[str, subprocess.CompletedProcess[str]]]) -> str:
    return "\n".join(f"== {name} (exit {p.returncode})\n{p.stdout[-1500:]}{p.stderr[-1500:]}"
                     for name, p in results)


def workspace(tmp: Path, weights: bytes) -> Path:
    """A publisher's repository: the document template, the wait script, built weights."""
    ws = tmp / "workspace"
    (ws / "models").mkdir(parents=True)
    (ws / "ci").mkdir()
    (ws / "build" / "weights").mkdir(parents=True)
    (ws / "models" / "qwen-chat.yaml.in").write_bytes((PIPELINES / "qwen-chat.yaml.in").read_bytes())
    (ws / "ci" / "wait_applied.py").write_bytes((PIPELINES / "wait_applied.py").read_bytes())
    (ws / "build" / "weights" / "model.safetensors").write_bytes(weights)
    (ws / "build" / "weights" / "config.json").write_text('{"layers": 2}\n')
    return ws
