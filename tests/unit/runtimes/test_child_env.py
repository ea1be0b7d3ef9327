"""The environment of host processes (childenv.child_env through the command and systemd
runtimes): a real child process reports what it got."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from watcher.core.childenv import EnvPolicy, child_env
from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.runtimes.command import CommandOptions, CommandRuntime
from watcher.runtimes.systemd import SystemdOptions, SystemdRuntime, parse_env

CANARY = "MW_TEST_DAEMON_SECRET"


def spec(env: dict[str, str]) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "version": "v1.0.0", "runtime": {"env": env},
                                     "model": {"uri": "file:///srv/m", "parameters": {"token": "t0k3n"}}})


def dump_env_argv(out: Path) -> list[str]:
    return [sys.executable, "-c", "import json, os, sys; "
            f"open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"]


async def test_command_child_gets_base_plus_admitted_env_never_the_daemons(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANARY, "must-not-leak")
    monkeypatch.setenv("LD_PRELOAD", "")  # the daemon's own, whatever it is, stays its own
    out = tmp_path / "env.json"
    policy = EnvPolicy(allow=("SERVER_FLAVOR",), base={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    rt = CommandRuntime(CommandOptions(start=dump_env_argv(out), timeout=30), tmp_path, policy)
    await rt.start(spec({"SERVER_FLAVOR": "large"}), "r1")
    got = json.loads(out.read_text())
    assert CANARY not in got and "LD_PRELOAD" not in got
    assert got["SERVER_FLAVOR"] == "large" and got["PATH"] == "/usr/bin:/bin"
    assert got["MODEL_WATCHER_REVISION"] == "r1" and got["MODEL_WATCHER_MODEL"] == "m"
    assert set(got) - {"SERVER_FLAVOR", "PATH", "LANG", "LC_CTYPE"} == {
        "MODEL_WATCHER_SPEC_FILE", "MODEL_WATCHER_MODEL", "MODEL_WATCHER_REVISION",
        "MODEL_WATCHER_VERSION", "MODEL_WATCHER_IMAGE"}
    assert stat.S_IMODE(Path(got["MODEL_WATCHER_SPEC_FILE"]).stat().st_mode) == 0o600


async def test_command_runtime_refuses_a_protected_name_even_past_admission(tmp_path: Path) -> None:
    # e.g. an Alertmanager restart of a spec admitted under older, looser settings
    out = tmp_path / "env.json"
    rt = CommandRuntime(CommandOptions(start=dump_env_argv(out)), tmp_path, EnvPolicy(allow=("*",)))
    with pytest.raises(RuntimeStartError, match="LD_PRELOAD is a protected variable"):
        await rt.start(spec({"LD_PRELOAD": "/tmp/evil.so"}), "r1")
    assert not out.exists(), "nothing ran"


def test_child_env_refuses_what_execve_or_an_environment_file_cannot_carry() -> None:
    policy = EnvPolicy(allow=("*",))
    with pytest.raises(ValueError, match="control character"):
        child_env({"A": "x\ny"}, {}, policy)
    with pytest.raises(ValueError, match="POSIX"):
        child_env({"A=B": "x"}, {}, policy)
    assert child_env({"A": "1"}, {"MODEL_WATCHER_MODEL": "m"}, policy, base=False) == {
        "A": "1", "MODEL_WATCHER_MODEL": "m"}


async def test_systemd_environment_file_holds_only_admitted_names(tmp_path: Path) -> None:
    from watcher.plugins import PluginContext

    ctx = PluginContext(state_dir=tmp_path, environment="test", env_policy=EnvPolicy(allow=("TOKEN",)))
    rt = SystemdRuntime(SystemdOptions(systemctl=["true"], env_file=tmp_path / "{model}.env", timeout=0.3), ctx)
    with pytest.raises(RuntimeStartError):  # `true` accepts the restart; `show` reports no state
        await rt.start(spec({"TOKEN": "s3cr3t"}), "r1")
    assert parse_env((tmp_path / "m.env").read_text())["TOKEN"] == "s3cr3t"
    with pytest.raises(RuntimeStartError, match=r"not in policy\.env\.allow"):
        await rt.start(spec({"OTHER": "x"}), "r2")
