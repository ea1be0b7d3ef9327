"""Webhook authentication and the loopback API, over a real socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from watcher.api import server as api
from watcher.api.webhook import Refused, Verifier, WebhookSettings, sign, signed_headers
from watcher.core.errors import SettingsError
from watcher.core.events import Event, Kind
from watcher.fakes.context import feature_context, operator_of
from watcher.features import FeatureContext
from watcher.settings import ApiSettings

SECRET = "unit-webhook-secret-0123456789"


def test_settings_validation() -> None:
    with pytest.raises(SettingsError, match=r"webhook\.max_body_bytes"):
        WebhookSettings.parse({"max_body_bytes": 0})
    with pytest.raises(SettingsError, match=r"webhook\.bogus"):
        WebhookSettings.parse({"bogus": 1})
    with pytest.raises(SettingsError, match="at least 16"):
        WebhookSettings.parse({"secret": "short"})
    s = WebhookSettings.parse({"secret": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_verifier() -> None:
    s = WebhookSettings.parse({"secret": SECRET, "replay_window": 60, "max_body_bytes": 100})
    v = Verifier(s)
    body = b'{"model": "m"}'
    now = 1_000_000.0
    h = {k.lower(): val for k, val in signed_headers(s, body, now).items()}
    v.verify(h, body, now + 5)
    with pytest.raises(Refused) as e:
        v.verify(h, body, now + 6)
    assert e.value.status == 409
    for headers, payload, at, status in [
        ({}, body, now, 401),
        ({**h, "x-model-watcher-signature": sign("x" * 20, body, now)}, body, now, 401),
        (h, body + b" ", now, 401),
        (h, body, now + 61, 401),
        ({**h, "x-model-watcher-timestamp": "yesterday"}, body, now, 401),
        (h, b"x" * 101, now, 413),
    ]:
        with pytest.raises(Refused) as e:
            v.verify(headers, payload, at)
        assert e.value.status == status
    # a replayed signature is forgotten once its window has passed (and then refused as stale)
    v._forget_expired(now + 1000)
    assert not v._seen
    assert Verifier(WebhookSettings()).check_size(5) is None
    with pytest.raises(Refused) as e:
        Verifier(WebhookSettings()).verify(h, body, now)
    assert e.value.status == 503


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[FeatureContext, str]]:
    ctx = feature_context(tmp_path, api=ApiSettings(enabled=True, port=0),
                          webhook={"secret": SECRET, "max_body_bytes": 1024,
                                   "alertmanager": {"bearer_token": "am-token-0123456789abc"}})
    a = api.Api(ctx, WebhookSettings.parse(ctx.settings.webhook))
    server = await asyncio.start_server(a.serve_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield ctx, f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


def _signed(body: bytes) -> dict[str, str]:
    return signed_headers(WebhookSettings.parse({"secret": SECRET}), body)


async def test_endpoints(tmp_path: Path) -> None:
    async with serving(tmp_path) as (ctx, base), httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/healthz")
        assert r.json() == {"status": "ok", "ready": False}
        ctx.bus.subscribe(ctx.metrics.on_message)
        ctx.bus.emit(Event(Kind.RECONCILED))
        ctx.ready = lambda: True
        assert (await c.get("/healthz")).json()["ready"] is True
        ctx.state.record_seen("m", "1", source="test")
        assert (await c.get("/status")).json()["models"]["m"]["last_revision"] == "1"
        m = await c.get("/metrics")
        assert m.headers["content-type"].startswith("text/plain")
        assert "model_watcher_ready 1.0" in m.text
        assert (await c.get("/nope")).status_code == 404
        assert (await c.post("/metrics")).status_code == 405
        assert (await c.get("/hooks/model-updated")).status_code == 405

        body = json.dumps({"event": "model_updated", "model": {"name": "qwen-chat"}}).encode()
        r = await c.post("/hooks/model-updated", content=body, headers=_signed(body))
        assert r.status_code == 202, r.text
        assert operator_of(ctx).calls == [("resync", "qwen-chat", None, "webhook")]
        r = await c.post("/hooks/model-updated", content=body, headers=_signed(body))
        assert r.status_code == 409  # same second, same body: a replay
        other = json.dumps({"event": "model_deleted", "model": "qwen-chat"}).encode()
        r = await c.post("/hooks/model-updated", content=other, headers=_signed(other))
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        bad = b'{"model": "../etc"}'
        assert (await c.post("/hooks/model-updated", content=bad,
                             headers=_signed(bad))).status_code == 400
        assert (await c.post("/hooks/model-updated", content=b"[",
                             headers=_signed(b"["))).status_code == 400
        old = signed_headers(WebhookSettings.parse({"secret": SECRET}), body, time.time() - 3600)
        assert (await c.post("/hooks/model-updated", content=body,
                             headers=old)).status_code == 401
        assert (await c.post("/hooks/model-updated", content=body)).status_code == 401
        big = b"{" + b" " * 5000 + b"}"
        assert (await c.post("/hooks/model-updated", content=big,
                             headers=_signed(big))).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 500
        r = await c.post("/hooks/model-updated", content=chunks())
        assert r.status_code == 413
    assert operator_of(ctx).calls == [("resync", "qwen-chat", None, "webhook")]
    text = ctx.metrics.render().decode()
    assert 'endpoint="/hooks/model-updated",result="refused_401"} 2.0' in text


async def test_keepalive_and_garbage(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, base):
        await _keepalive_and_garbage(base)


async def _keepalive_and_garbage(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()
    data = b""
    while data.count(b"HTTP/1.1 200") < 2:
        data += await asyncio.wait_for(reader.read(4096), 5)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    assert b"200" not in rest
    writer.close()


async def test_serve_lifecycle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    off = feature_context(tmp_path)
    await asyncio.wait_for(api.serve(off), 1)  # disabled: returns at once

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = feature_context(tmp_path, api=ApiSettings(enabled=True, port=busy.getsockname()[1]))
        await asyncio.wait_for(api.serve(taken), 2)  # port taken: logged, daemon goes on
    assert "cannot listen" in caplog.text

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    on = feature_context(tmp_path, api=ApiSettings(enabled=True, port=port), webhook={"secret": SECRET})
    task = asyncio.create_task(api.serve(on))
    async with httpx.AsyncClient() as c:
        for _ in range(100):
            try:
                r = await c.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
        assert r.status_code == 200
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
