from __future__ import annotations

from pathlib import Path

import pytest

from watcher.core.errors import SettingsError
from watcher.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "w.toml"
    p.write_text(text)
    return p


def test_defaults_are_the_embedded_localdir_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.source.options() == {"kind": "localdir", "path": "config/models"}
    assert s.api.host == "127.0.0.1"


def test_env_overrides_toml_with_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, 'environment = "staging"\n[source]\nkind = "etcd"\nprefix = "/a/"\n[reconcile]\nwait_min = 1\n')
    monkeypatch.setenv("MODEL_WATCHER_ENVIRONMENT", "production")
    monkeypatch.setenv("MODEL_WATCHER_RECONCILE__WAIT_MAX", "9")
    s = load_settings(p)
    assert s.environment == "production" and s.reconcile.wait_min == 1 and s.reconcile.wait_max == 9
    assert s.source.options() == {"kind": "etcd", "prefix": "/a/"}


@pytest.mark.parametrize(("text", "message"), [
    ("[reconcile]\nwait_min = 5\nwait_max = 1\n", "reconcile: wait_min (5.0) must not exceed wait_max"),
    ("[reconcile]\nwait_mn = 1\n", "reconcile.wait_mn: Extra inputs are not permitted"),
    ("log_level = 'LOUD'\n", "log_level: Input should be"),
    ("[health]\nfailure_threshold = 0\n", "health.failure_threshold"),
    ("this is = not toml [\n", "invalid TOML"),
])
def test_invalid_settings_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(write(tmp_path, text))
    assert message in exc.value.reason and exc.value.exit_status == 2


def test_missing_explicit_file() -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings("/nonexistent/watcher.toml")


def test_env_json_lists_reach_plugin_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sidecar's settings come from the environment alone: JSON lists and tables in
    untyped (plug-in, feature) sections are decoded; other strings stay strings."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODEL_WATCHER_SOURCE__KIND", "etcd")
    monkeypatch.setenv("MODEL_WATCHER_SOURCE__ENDPOINTS", '["http://etcd:2379", "http://b:2379"]')
    monkeypatch.setenv("MODEL_WATCHER_SOURCE__PASSWORD", "[not json")
    monkeypatch.setenv("MODEL_WATCHER_SOURCE__TIMEOUT", "3")
    monkeypatch.setenv("MODEL_WATCHER_ALERTS__NOTIFIERS", '{"oncall": {"kind": "slack", "url_env": "U"}}')
    s = load_settings()
    assert s.source.options() == {"kind": "etcd", "endpoints": ["http://etcd:2379", "http://b:2379"],
                                  "password": "[not json", "timeout": "3"}
    assert s.alerts == {"notifiers": {"oncall": {"kind": "slack", "url_env": "U"}}}
    from watcher.sources.etcd import EtcdOptions

    assert EtcdOptions.model_validate({k: v for k, v in s.source.options().items() if k != "kind"}).timeout == 3
