"""Every configured password and token is masked in logs once the settings are loaded
(watcher/settings.py -> logs.register_secrets_in), whatever plug-in it belongs to.

Before: only the webhook, docker and tracing modules registered their own secrets; the
etcd/Nacos `password` and the targets' `token` reached any log line that quoted them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from watcher.observability.logs import JsonFormatter, TextFormatter
from watcher.settings import load_settings

SECRETS = {
    "etcd": 'kind = "etcd"\nendpoints = ["http://127.0.0.1:2379"]\nusername = "root"\npassword = "etcd-pw-6f1c2"\n',
    "nacos": 'kind = "nacos"\nserver_addresses = "127.0.0.1:8848"\nusername = "nacos"\n'
             'password = "nacos-pw-93ad1"\naccess_key = "ak-77e0a"\nsecret_key = "sk-3be91"\n',
}


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("watcher.test", logging.ERROR, __file__, 1, message, None, None)


@pytest.mark.parametrize("source", sorted(SECRETS))
def test_source_passwords_and_target_tokens_are_masked(tmp_path: Path, source: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "w.toml"
    config.write_text(f"[source]\n{SECRETS[source]}\n[target]\nkind = \"http\"\n"
                      'url = "http://127.0.0.1:1/admin"\ntoken = "overridden"\n')
    # as systemd's EnvironmentFile= gives it, overriding the file
    monkeypatch.setenv("MODEL_WATCHER_TARGET__TOKEN", "env-given-tok-11aa")
    load_settings(config)
    secrets = [line.split('"')[1] for line in SECRETS[source].splitlines()
               if line.startswith(("password", "access_key", "secret_key"))]
    secrets += ["env-given-tok-11aa"]
    line = "connect failed with " + " / ".join(secrets)
    for formatter in (JsonFormatter(), TextFormatter()):
        out = formatter.format(record(line))
        assert not [s for s in secrets if s in out], out
        assert "***" in out
    assert "root" in JsonFormatter().format(record("user root"))  # a user name is not a secret


def test_only_secret_names_are_registered() -> None:
    from watcher.observability.logs import register_secrets_in

    register_secrets_in({"url": "http://plain-url-1e2f", "secret_env": "MW_SECRET_NAME_ONLY",
                         "key_file": "/etc/key-file-path", "headers": {"authorization": "Bearer hdr-9c8d"}})
    out = json.loads(JsonFormatter().format(record(
        "http://plain-url-1e2f MW_SECRET_NAME_ONLY /etc/key-file-path Bearer hdr-9c8d")))["event"]
    assert out == "http://plain-url-1e2f MW_SECRET_NAME_ONLY /etc/key-file-path ***"
