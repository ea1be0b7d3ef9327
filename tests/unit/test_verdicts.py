"""`validate` and `publish` give the daemon's verdict on every hostile document: the reason of
`check_document` (the one check all three run), on one line, exit status 1, no traceback, and
`publish` writes nothing. The daemon side is tests/integration/hostile/test_hostile_daemon.py,
which asserts the daemon's history reason equals `check_document`'s for the same documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.hostile.cases import NAME, Case, cases, valid
from watcher.cli import main
from watcher.cli.validate import check_document
from watcher.core.errors import RejectedError
from watcher.settings import load_settings


def settings_file(tmp: Path, root: Path) -> Path:
    path = tmp / "watcher.toml"
    path.write_text(f'environment = "production"\nstate_dir = "{tmp / "state"}"\n'
                    f'[source]\nkind = "localdir"\npath = "{tmp / "models"}"\n'
                    f'[trust]\nallowed_roots = ["{root}"]\n'
                    '[policy.env]\nallow = ["SERVER_FLAVOR"]\n')
    (tmp / "models").mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Case]]:
    tmp = tmp_path_factory.mktemp("verdicts")
    root = tmp / "weights"
    root.mkdir()
    return tmp, settings_file(tmp, root), cases(root)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_name" in metafunc.fixturenames:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            metafunc.parametrize("case_name", [c.name for c in cases(Path(d))])


def test_validate_and_publish_give_the_checks_reason(env: tuple[Path, Path, list[Case]], case_name: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    tmp, config, all_cases = env
    case = next(c for c in all_cases if c.name == case_name)
    with pytest.raises(RejectedError) as err:
        check_document(case.content, load_settings(config), key=NAME, verify=True)
    reason = err.value.reason
    assert case.reason in reason and "\n" not in reason

    file = tmp / f"{case.name}.doc"
    file.write_bytes(case.content)
    assert main(["--config", str(config), "validate", str(file), "--verify"]) == 1
    out = capsys.readouterr()
    assert out.err == f"{file}: invalid: {reason}\n" and out.out == ""
    assert main(["--config", str(config), "publish", NAME, str(file), "--verify"]) == 1
    out = capsys.readouterr()
    assert out.err == f"model-watcher: not published: {reason}\n" and out.out == ""
    assert all(p.read_bytes() != case.content for p in (tmp / "models").iterdir()), "written"


def test_the_valid_document_passes_all_three(env: tuple[Path, Path, list[Case]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    tmp, config, _ = env
    root = tmp / "weights"
    raw = yaml.safe_dump(valid(root, 1)).encode()
    check_document(raw, load_settings(config), key=NAME, verify=True)
    file = tmp / "valid.yaml"
    file.write_bytes(raw)
    assert main(["--config", str(config), "validate", str(file), "--verify"]) == 0
    assert main(["--config", str(config), "publish", NAME, str(file), "--verify"]) == 0
    assert (tmp / "models" / f"{NAME}.yaml").read_bytes() == raw
    capsys.readouterr()
