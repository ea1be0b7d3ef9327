"""deploy/container/healthcheck.py resolves the API's address as the daemon's settings do."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.infra.common import ROOT
from watcher.settings import load_settings

SCRIPT = ROOT / "deploy" / "container" / "healthcheck.py"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mw_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("toml", "env"), [
    ("", {}),
    ("[api]\nenabled = true\nport = 9999\n", {}),
    ("[api]\nhost = \"0.0.0.0\"\nport = 9999\n", {"MODEL_WATCHER_API__PORT": "9100"}),
    ("", {"MODEL_WATCHER_API__HOST": "::", "MODEL_WATCHER_API__PORT": "9200"}),
    ("[api]\nhost = \"10.0.0.7\"\n", {}),
])
def test_address_matches_the_daemons_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              toml: str, env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)
    settings_file = tmp_path / "watcher.toml"
    settings_file.write_text(toml)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    daemon = load_settings(settings_file).api
    assert script().api_address(env, settings_file) == (daemon.host, daemon.port)


def test_probe_url_uses_loopback_for_wildcards() -> None:
    hc = script()
    assert hc.probe_url("0.0.0.0", 9464) == "http://127.0.0.1:9464/healthz"
    assert hc.probe_url("::", 9464) == "http://[::1]:9464/healthz"
    assert hc.probe_url("10.0.0.7", 1) == "http://10.0.0.7:1/healthz"


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert script().api_address({}, tmp_path / "absent.toml") == ("127.0.0.1", 9464)
