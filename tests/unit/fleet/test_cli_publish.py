"""`publish --rollout` refuses before writing anything: a bad policy (exit 2, the field
named) and a single-host source (localdir: exit 2); the document stays unpublished."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli import main

DOC = "name: demo\nversion: v1.0.0\nmodel: {uri: 'file:///srv/demo'}\n"


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    models = tmp_path / "models"
    models.mkdir()
    config = tmp_path / "watcher.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[source]\nkind = "localdir"\n'
                      f'path = "{models}"\n[fleet]\nenabled = true\n')
    doc = tmp_path / "demo.yaml"
    doc.write_text(DOC)
    return config, doc, models


@pytest.mark.parametrize(("policy", "words"), [
    ("{steps: [50, 10, 100]}", "steps must increase"),
    ("{steps: [10, 50], soak: 1}", "last step must be 100"),
    ("{canary: true}", "canary"),
    ("not: [valid", "not YAML/JSON"),
])
def test_a_bad_rollout_policy_publishes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                policy: str, words: str) -> None:
    config, doc, models = setup(tmp_path)
    assert main(["--config", str(config), "publish", "demo", str(doc), "--rollout", policy]) == 2
    assert words in capsys.readouterr().err
    assert list(models.iterdir()) == []


def test_a_policy_file_is_read_and_localdir_is_refused_as_single_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, doc, models = setup(tmp_path)
    policy = tmp_path / "rollout.yaml"
    policy.write_text("steps: [10, 100]\nsoak: 5\nmax_unavailable: 2\n")
    assert main(["--config", str(config), "publish", "demo", str(doc), "--rollout", str(policy)]) == 2
    assert "single-host" in capsys.readouterr().err
    assert list(models.iterdir()) == []
    assert main(["--config", str(config), "rollout", "status", "demo"]) == 2
    assert "single-host" in capsys.readouterr().err
