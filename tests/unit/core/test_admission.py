"""What settings let a document ask for (admission.py through policy.check): runtime.env names,
uri schemes, health overrides; and the gate's overall deadline (health.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from watcher.core import policy
from watcher.core.childenv import EnvPolicy
from watcher.core.errors import PolicyError
from watcher.core.health import HealthCheck, HealthLimits, gate
from watcher.core.spec import ModelSpec
from watcher.settings import PolicySettings


def spec(**sections: Any) -> ModelSpec:
    doc: dict[str, Any] = {"name": "m", "version": "v1.0.0", "model": {"uri": "file:///srv/m"}}
    doc.update(sections)
    return ModelSpec.model_validate(doc)


def refusal(s: ModelSpec, settings: PolicySettings | None = None, env: str = "production") -> str:
    return policy.verdict(s, environment=env, settings=settings or PolicySettings())


@pytest.mark.parametrize(("allow", "env", "verdict"), [
    ((), {"SERVER_FLAVOR": "x"}, "not in policy.env.allow (empty)"),
    (("SERVER_FLAVOR",), {"SERVER_FLAVOR": "x"}, "accept"),
    (("VLLM_*",), {"VLLM_USE_V1": "1"}, "accept"),
    (("VLLM_*",), {"VLLM": "1"}, "not in policy.env.allow"),
    (("*",), {"ANYTHING": "1"}, "accept"),
    # protected names: never through a pattern, only by their exact name
    (("*",), {"PATH": "/tmp/evil"}, "PATH is a protected variable"),
    (("*",), {"LD_PRELOAD": "/tmp/evil.so"}, "LD_PRELOAD is a protected variable"),
    (("LD_*",), {"LD_LIBRARY_PATH": "/tmp"}, "protected"),
    (("*",), {"PYTHONPATH": "/tmp"}, "protected"), (("*",), {"PYTHONSTARTUP": "/tmp/x"}, "protected"),
    (("*",), {"GCONV_PATH": "/tmp"}, "protected"), (("*",), {"BASH_ENV": "/tmp/x"}, "protected"),
    (("*",), {"GLIBC_TUNABLES": "x"}, "protected"), (("*",), {"NODE_OPTIONS": "-r x"}, "protected"),
    (("*",), {"JAVA_TOOL_OPTIONS": "x"}, "protected"), (("*",), {"https_proxy": "x"}, "protected"),
    (("*",), {"ld_preload": "x"}, "protected"),
    (("LD_PRELOAD",), {"LD_PRELOAD": "/opt/jemalloc.so"}, "accept"),
    (("PATH",), {"PATH": "/opt/bin:/usr/bin"}, "accept"),
    # the daemon's own names never come from a document
    (("*",), {"MODEL_WATCHER_SPEC_FILE": "/etc/shadow"}, "reserved for the daemon"),
])
def test_runtime_env_is_admitted_by_the_allowlist(allow: tuple[str, ...], env: dict[str, str],
                                                  verdict: str) -> None:
    got = refusal(spec(runtime={"env": env}), PolicySettings(env=EnvPolicy(allow=allow)))
    assert verdict in got, got


def test_allowlist_entries_are_checked_at_load() -> None:
    for bad in (["A=B"], ["MODEL_WATCHER_X"], ["*A"]):
        with pytest.raises(ValueError, match=r"POSIX|daemon.s own"):
            EnvPolicy(allow=tuple(bad))


@pytest.mark.parametrize(("uri", "verdict"), [
    ("file:///srv/m", "accept"), ("/srv/m", "accept"), ("s3://b/m", "accept"),
    ("hf://org/m", "accept"), ("https://h/m.bin", "accept"),
    ("http://h/m.bin", "scheme 'http' is not in policy.uri_schemes"),
    ("ftp://h/m", "scheme 'ftp'"), ("javascript:alert(1)", "scheme 'javascript'"),
    ("models/x.joblib", "is a relative path"), ("x", "is a relative path"),
])
def test_uri_schemes_come_from_an_explicit_list(uri: str, verdict: str) -> None:
    assert verdict in refusal(spec(model={"uri": uri}))
    adapters = {"uri": "file:///srv/m", "adapters": [{"name": "a", "uri": uri}]}
    assert verdict in refusal(spec(model=adapters))


@pytest.mark.parametrize(("health", "verdict"), [
    ({"path": "/ready", "period": 1, "failure_threshold": 10}, "accept"),
    ({"initial_delay": 31_536_000}, "health.initial_delay 3.1536e+07 is over the 60"),
    ({"period": 86_400}, "health.period 86400 is over the 10"),
    ({"timeout": 3600}, "health.timeout"),
    ({"failure_threshold": 1_000_000}, "health.failure_threshold 1e+06 is over the 30"),
    ({"success_threshold": 50}, "health.success_threshold"),
    ({"latency_ms": 1e9}, "health.latency_ms"),
])
def test_health_overrides_are_capped(health: dict[str, Any], verdict: str) -> None:
    assert verdict in refusal(spec(health=health))


def test_health_caps_are_settings() -> None:
    loose = PolicySettings(health=HealthLimits(initial_delay=600))
    assert refusal(spec(health={"initial_delay": 300}), loose) == "accept"


def test_image_tag_whole_channel() -> None:
    image = "registry.example:5000/m/s:v1.2.1-hotfix-dev"
    assert "'pre' channel" in refusal(spec(runtime={"image": image}))


class Flapping:
    """A real loopback HTTP server answering 200, 500, 200, 500, ... (never a verdict)."""

    def __init__(self) -> None:
        self.answers = itertools.cycle([b"200 OK", b"500 Internal Server Error"])
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 " + next(self.answers) + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/health"


@pytest.fixture
async def flapping() -> AsyncIterator[Flapping]:
    f = Flapping()
    f.server = await asyncio.start_server(f.handle, "127.0.0.1", 0)
    async with f.server:
        yield f


async def test_a_flapping_server_cannot_hold_the_gate_past_its_deadline(flapping: Flapping) -> None:
    # success_threshold 2 and failure_threshold 2 never reach a verdict on 200/500/200/...
    check = HealthCheck(period=0.01, timeout=0.2, success_threshold=2, failure_threshold=2,
                        latency_ms=1000, deadline=0.5)
    started = time.monotonic()
    result = await gate(flapping.url, check)
    assert not result.ok
    assert "no verdict within its 0.5s deadline" in result.reason
    assert result.probes > 4 and time.monotonic() - started < 5


def test_the_deadline_covers_the_settings_own_budget() -> None:
    with pytest.raises(ValueError, match="shorter than the gate's own failure budget"):
        HealthCheck(period=5, failure_threshold=120, deadline=300)
    worst = HealthLimits()
    budget = worst.initial_delay + worst.failure_threshold * (worst.period + worst.timeout)
    assert budget <= HealthCheck().deadline  # the default caps fit in the default deadline


def test_document_health_cannot_set_the_deadline_or_a_url() -> None:
    assert "health.deadline: Extra inputs" in _schema_error({"deadline": 1e6})
    assert "health.url: a document cannot choose the probe URL" in _schema_error({"url": "http://169.254.169.254/"})
    # a spec stored before the rule carries `"url": null`: it still loads, and is not dumped again
    stored = spec(health={"path": "/ready", "url": None})
    assert "url" not in stored.canonical()["health"]
    merged = HealthCheck(url="http://127.0.0.1:1/health").merged(spec(health={"path": "/ready"}).health)
    assert merged.url_for("m", "http://127.0.0.1:2") == "http://127.0.0.1:2/ready"


def _schema_error(health: dict[str, Any]) -> str:
    from pydantic import ValidationError

    try:
        spec(health=health)
    except ValidationError as exc:
        from watcher.plugins import format_validation_error

        return format_validation_error(exc)
    raise AssertionError("accepted")


def test_refusals_are_policy_errors() -> None:
    with pytest.raises(PolicyError, match="LD_PRELOAD"):
        policy.check(spec(runtime={"env": {"LD_PRELOAD": "x"}}), environment="development",
                     settings=PolicySettings(env=EnvPolicy(allow=("*",))))
