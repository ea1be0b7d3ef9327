"""Files that may hold secrets are written 0600: the systemd runtime's EnvironmentFile (it holds
runtime.env, where tokens go) and the signal target's spec file (the whole spec).

Before: both were written with write_atomically's default 0644 (world-readable)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from watcher.core.errors import RuntimeStartError, TargetError
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext
from watcher.runtimes.systemd import SystemdOptions, SystemdRuntime
from watcher.targets.signal import SignalOptions, SignalTarget

SPEC = ModelSpec.model_validate({"name": "m", "version": "v1.0.0",
                                 "model": {"uri": "file:///srv/m", "parameters": {"token": "t0k3n"}}})


async def test_systemd_environment_file_is_0600(tmp_path: Path) -> None:
    # `true` accepts the restart; `show` then reports no state, so start() times out after
    # writing the file, which is all this test needs.
    rt = SystemdRuntime(SystemdOptions(systemctl=["true"], env_file=tmp_path / "{model}.env", timeout=0.3),
                        PluginContext(state_dir=tmp_path, environment="test"))
    with pytest.raises(RuntimeStartError):
        await rt.start(SPEC, "r1")
    path = tmp_path / "m.env"
    assert "MODEL_WATCHER_REVISION" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_signal_targets_spec_file_is_0600(tmp_path: Path) -> None:
    target = SignalTarget(SignalOptions(pidfile=tmp_path / "absent.pid", spec_file=tmp_path / "{name}.json"))
    with pytest.raises(TargetError, match="does not exist"):
        await target.apply(SPEC, None)
    path = tmp_path / "m.json"
    assert json.loads(path.read_text())["model"]["parameters"]["token"] == "t0k3n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
