"""Operations tests: the real daemon subprocess with its API, webhooks, alerts and tracing on.

Every secret these tests configure is registered in SECRETS, and every log file they produce
in LOGS; the session fixture below greps them all once the last of them is done (and
test_secrets.py runs a secret-heavy daemon of its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.common import free_port, wait_until
from tests.infra.daemon import DaemonHarness
from tests.infra.model_server import ModelServer
from tests.infra.receiver import Receiver

WEBHOOK_SECRET = "ops-webhook-hmac-key-7f3a9c2e51"
AM_TOKEN = "ops-alertmanager-bearer-4d8e1b7c"
ROBOT_TOKENS = {kind: f"ops-{kind}-robot-token-{i}a9e3c" for i, kind in
                enumerate(("slack", "dingtalk", "feishu", "wecom", "webhook"))}
ROBOT_SECRET = "SECops-robot-signing-secret-61c0d2"
OTLP_TOKEN = "ops-otlp-bearer-2b6f0e9d"
SECRETS: list[str] = [WEBHOOK_SECRET, AM_TOKEN, ROBOT_SECRET, OTLP_TOKEN, *ROBOT_TOKENS.values()]
LOGS: list[Path] = []


def doc(version: str = "v1.0.0", temperature: float = 0.7, name: str = "demo",
        **params: Any) -> bytes:
    return yaml.safe_dump({
        "name": name, "version": version,
        "model": {"uri": f"file:///srv/models/{name}/{version}",
                  "parameters": {"temperature": temperature, **params}},
    }).encode()


def notifiers(rx: Receiver) -> dict[str, Any]:
    """One notifier of each kind, all posting to `rx` on a path of their own."""
    out: dict[str, Any] = {}
    for kind, token in ROBOT_TOKENS.items():
        url = f"{rx.base}/{kind}?access_token={token}"
        opts: dict[str, Any] = {"kind": kind, "url": url, "backoff": 0.1}
        if kind in ("dingtalk", "feishu", "webhook"):
            opts["secret"] = ROBOT_SECRET
        out[kind] = opts
    return out


class OpsEnv:
    """A models directory, the example server, a receiver and a daemon with ops features on."""

    def __init__(self, tmp: Path, extra: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, runtime: bool = False) -> None:
        self.tmp = tmp
        self.models = tmp / "models"
        self.models.mkdir(parents=True)
        self.outside = tmp / "outside"  # symlink targets: changes here raise no fs event
        self.outside.mkdir()
        self.server = ModelServer(tmp / "server").start()
        self.rx = Receiver().__enter__()
        self.port = free_port()
        server_settings = self.server.settings()
        if not runtime:
            server_settings.pop("runtime")
        settings: dict[str, Any] = {
            "source": {"kind": "localdir", "path": str(self.models), "resync_interval": 3600},
            **server_settings,
            "api": {"enabled": True, "port": self.port},
            "webhook": {"secret": WEBHOOK_SECRET, "max_body_bytes": 4096,
                        "alertmanager": {"bearer_token": AM_TOKEN}},
            **(extra or {}),
        }
        self.daemon = DaemonHarness(tmp / "daemon", settings, env=env)
        self.api = f"http://127.0.0.1:{self.port}"
        LOGS.extend([self.daemon.log_path, self.server.log])

    def write(self, content: bytes, name: str = "demo") -> str:
        from watcher.sources.localdir import revision_of

        path = self.models / f"{name}.yaml"
        tmp = path.with_name(f".{path.name}.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)

    def write_behind(self, content: bytes, name: str = "demo") -> str:
        """Change a document through a symlink from outside the watched directory."""
        from watcher.sources.localdir import revision_of

        target = self.outside / f"{name}.yaml"
        link = self.models / f"{name}.yaml"
        if not link.is_symlink():
            target.write_bytes(content)
            link.symlink_to(target)
        else:
            target.write_bytes(content)
        return revision_of(content)

    def start(self) -> None:
        self.daemon.start()
        wait_until(lambda: httpx.get(self.api + "/healthz", timeout=1).status_code == 200, 20,
                   "the API listener")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.api + "/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def close(self) -> None:
        self.daemon.stop()
        self.server.stop()
        self.rx.__exit__(None, None, None)


@pytest.fixture
def ops_env(tmp_path: Path) -> Iterator[OpsEnv]:
    e = OpsEnv(tmp_path)
    try:
        yield e
    finally:
        e.close()


def signed(body: bytes, now: float | None = None) -> dict[str, str]:
    from watcher.api.webhook import WebhookSettings, signed_headers

    return signed_headers(WebhookSettings.model_validate({"secret": WEBHOOK_SECRET}), body, now)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]



@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_ops_log() -> Iterator[None]:
    """After the session's last ops test: no configured secret in any log file they wrote
    (an error at teardown names the file and the secret's first characters)."""
    yield
    leaks = [(str(p), s[:4] + "...") for p in LOGS if p.exists()
             for s in SECRETS if s in p.read_text(errors="replace")]
    assert not leaks, f"secrets in logs: {leaks}"
