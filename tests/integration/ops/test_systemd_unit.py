"""The shipped unit files pass `systemd-analyze verify` offline and the service rates "OK"
(exposure <= 2.0). Under a real systemd, with drop-ins: tests/integration/systemd/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.infra.common import ROOT, require_binary

UNIT = ROOT / "systemd" / "model-watcher.service"
EXEC = "/opt/model-watcher/bin/model-watcher"
MAX_EXPOSURE = 2.0


def _unit_copy(tmp_path: Path, source: Path = UNIT) -> Path:
    """The unit with ExecStart pointing at an executable that exists (verify checks it)."""
    binary = tmp_path / "bin" / "model-watcher"
    binary.parent.mkdir(exist_ok=True)
    shutil.copy("/bin/true", binary)
    text = source.read_text()
    assert EXEC in text
    unit = tmp_path / source.name
    unit.write_text(text.replace(EXEC, str(binary)))
    return unit


def test_once_service_and_timer_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "Debian package systemd")
    service = _unit_copy(tmp_path, UNIT.with_name("model-watcher-once.service"))
    shutil.copy(UNIT.with_name("model-watcher-once.timer"), tmp_path)
    proc = subprocess.run([analyze, "verify", service.name, "model-watcher-once.timer"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "model-watcher-once" not in proc.stderr, proc.stderr


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "Debian package systemd")
    unit = _unit_copy(tmp_path)
    proc = subprocess.run([analyze, "verify", unit.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # verify prints warnings without failing; the unit must be clean of them
    assert "model-watcher.service" not in proc.stderr, proc.stderr


def test_unit_security_exposure(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "Debian package systemd")
    unit = _unit_copy(tmp_path)
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", unit.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    exposure, verdict = float(m[1]), m[2]
    print(f"systemd-analyze security exposure: {exposure} {verdict}")
    assert exposure <= MAX_EXPOSURE, proc.stdout
    assert verdict == "OK"


def test_unit_promises() -> None:
    """The directives the daemon's behaviour relies on are present."""
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "NotifyAccess=main", "Restart=on-failure",
                 "StartLimitBurst=", "EnvironmentFile=-/etc/model-watcher/env",
                 "ProtectSystem=strict", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes",
                 "SystemCallFilter=@system-service", "StateDirectory=model-watcher",
                 "LogsDirectory=model-watcher", "ConfigurationDirectory=model-watcher",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "User=model-watcher",
                 "ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'"):
        assert line in text, line
