"""Packaging for real: `python -m build` makes a wheel and an sdist that `twine check` passes;
each installs with pip into a clean venv (the locked requirements' wheels from the host's
wheelhouse, offline; the sdist built by pip with hatchling) and runs `model-watcher --help`;
the installed command prints bash and zsh completion that the shells load and use."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.common import ROOT, require_binary
from tests.infra.sidecar import wheelhouses
from watcher.cli import COMMANDS

VENV_BIN = Path(sys.executable).parent


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # build's own frontend; its isolated build environments made by uv (much faster than
    # pip's) when uv is there, as it is wherever `make test` ran scripts/deps/00-python.sh
    installer = ["--installer", "uv"] if shutil.which("uv") else []
    run(sys.executable, "-m", "build", *installer, "--outdir", out, ROOT)
    return out


def test_build_and_twine_check(dist: Path) -> None:
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    out = run(VENV_BIN / "twine", "check", "--strict", *wheels, *sdists)
    assert out.count("PASSED") == 2, out
    listing = run("tar", "-tzf", sdists[0])
    assert "/watcher/cli/__init__.py" in listing and "/tests/" not in listing


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_into_a_clean_venv(dist: Path, tmp_path: Path, kind: str) -> None:
    artifact = next(dist.glob("*.whl" if kind == "wheel" else "*.tar.gz"))
    wheels, tools = wheelhouses(tmp_path / "host-dist")
    venv = tmp_path / "venv"
    run(require_binary("python3", "Debian python3"), "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--quiet", "--no-compile", "--no-index", "--find-links", wheels,
        "--find-links", tools, artifact)
    help_text = run(venv / "bin" / "model-watcher", "--help")
    for name in COMMANDS:
        assert name.replace("_", "-") in help_text, name
    assert run(venv / "bin" / "model-watcher", "--version").strip() == "model-watcher 0.1.0"
    # the package is the installed one, not this checkout
    where = run(venv / "bin" / "python", "-c", "import watcher; print(watcher.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv)), where


def test_bash_completion_completes_commands_options_and_files(tmp_path: Path) -> None:
    script = tmp_path / "model-watcher.bash"
    script.write_text(run(VENV_BIN / "model-watcher", "completion", "bash"))
    (tmp_path / "qwen-chat.yaml").write_text("")

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        out = run("bash", "--norc", "-c", f"source {script}; COMP_WORDS=({line}); "
                  f"COMP_CWORD={len(words) - 1}; _shtab_model_watcher; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                  cwd=tmp_path)
        return sorted(out.split())

    assert complete("model-watcher", "pu") == ["publish", "pull", "push-weights"]
    assert complete("model-watcher", "publish", "--if") == ["--if-md5", "--if-revision"]
    assert complete("model-watcher", "validate", "qwen") == ["qwen-chat.yaml"]
    assert complete("model-watcher", "completion", "") == ["bash", "zsh"]


def test_zsh_completion_loads_as_a_compdef(tmp_path: Path) -> None:
    zsh = require_binary("zsh", "Debian package zsh (scripts/deps/75-deploy.sh)")
    fpath = tmp_path / "site-functions"
    fpath.mkdir()
    script = fpath / "_model-watcher"
    script.write_text(run(VENV_BIN / "model-watcher", "completion", "zsh"))
    run(zsh, "-n", script)
    registered = run(zsh, "-fc", f"fpath=({fpath} $fpath); autoload -Uz compinit && compinit -u -D; "
                     "print -r -- ${_comps[model-watcher]}").strip()
    assert registered == "_model-watcher"
    # the commands zsh offers: the generated function run with _describe printing its list
    out = run(zsh, "-fc", "_describe() { print -rl -- ${(P)2}; }; "
              f"eval \"$(sed -n '/^_shtab_model_watcher_commands()/,/^}}/p' {script})\"; "
              "_shtab_model_watcher_commands")
    offered = sorted(line.split(":", 1)[0] for line in out.splitlines())
    assert offered == sorted(name.replace("_", "-") for name in COMMANDS), offered
