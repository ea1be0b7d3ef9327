"""The docs site builds with `mkdocs build --strict` (Material theme; every nav page present,
no broken link or anchor), and its generated reference pages cover the code they come from:
every command and option of the CLI, every settings section, every plug-in kind's options."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tests.infra.common import ROOT
from watcher import plugins
from watcher.cli import build_parser
from watcher.settings import Settings

MKDOCS = Path(sys.executable).parent / "mkdocs"  # the dev group (uv.lock)


def _text(html: Path) -> str:
    import re

    return " ".join(re.sub(r"<[^>]+>", " ", html.read_text()).split())


def test_docs_site_builds_strictly_with_generated_references(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{MKDOCS.parent}:/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ("index", "concepts", "localdir", "etcd", "nacos", "containers", "operations",
                 "sidecar", "monitoring", "pipelines", "security", "performance",
                 "reference/cli", "reference/settings"):
        path = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert path.is_file(), page
    assert "make demo" in _text(site / "index.html") and "make test" in _text(site / "index.html")

    cli = _text(site / "reference" / "cli" / "index.html")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"model-watcher {name}" in cli, name
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert option in cli, f"{name} {option}"

    settings = _text(site / "reference" / "settings" / "index.html")
    for section in Settings.model_fields:
        assert f"[{section}]" in settings or section in settings, section
    for group, kinds in plugins.GROUPS.items():
        for kind in kinds:
            assert f'kind = "{kind}"' in settings.replace("&quot;", '"'), f"{group} {kind}"
    assert "MODEL_WATCHER_SOURCE__ENDPOINTS" in settings
