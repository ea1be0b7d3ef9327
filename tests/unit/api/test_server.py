"""The loopback API over a real socket on 127.0.0.1: uvicorn + Starlette as the daemon runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from watcher.api import server as api
from watcher.api import transport
from watcher.api.app import Api
from watcher.api.webhook import WebhookSettings, sign, signed_headers
from watcher.core.events import Event, Kind
from watcher.fakes.context import feature_context, operator_of
from watcher.features import FeatureContext
from watcher.settings import ApiSettings

SECRET = "unit-webhook-secret-0123456789"
HOOK = "/hooks/model-updated"


class Served:
    def __init__(self, ctx: FeatureContext, port: int, task: asyncio.Task[None]) -> None:
        self.ctx, self.port, self.task = ctx, port, task
        self.base = f"http://127.0.0.1:{port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, body_deadline: float = 10.0, head_deadline: float = 10.0,
                  grace: float = 1.0) -> AsyncIterator[Served]:
    """The API's app on uvicorn on a port the OS picked, stopped (and awaited) afterwards."""
    ctx = feature_context(tmp_path, api=ApiSettings(enabled=True, port=0),
                          webhook={"secret": SECRET, "max_body_bytes": 1024,
                                   "alertmanager": {"bearer_token": "am-token-0123456789abc"}})
    app = Api(ctx, WebhookSettings.parse(ctx.settings.webhook), body_deadline=body_deadline).app()
    sock = transport.listen("127.0.0.1", 0)
    task = asyncio.create_task(transport.run(app, sock, head_deadline=head_deadline, grace=grace))
    try:
        yield Served(ctx, sock.getsockname()[1], task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _signed(body: bytes, **headers: str) -> dict[str, str]:
    return {**signed_headers(WebhookSettings.parse({"secret": SECRET}), body), **headers}


async def _closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server still sends until it closes the connection (fails after `within`)."""
    data = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def test_endpoints(tmp_path: Path) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as c:
        ctx = s.ctx
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
        assert (await c.get("/nope")).json() == {"error": "not found"}
        assert (await c.post("/metrics")).status_code == 405
        assert (await c.get(HOOK)).status_code == 405

        body = json.dumps({"event": "model_updated", "model": {"name": "qwen-chat"}}).encode()
        headers = _signed(body)
        r = await c.post(HOOK, content=body, headers=headers)
        assert r.status_code == 202, r.text
        assert operator_of(ctx).calls == [("resync", "qwen-chat", None, "webhook")]
        r = await c.post(HOOK, content=body, headers=headers)
        assert r.status_code == 409  # the same signed request again: a replay
        other = json.dumps({"event": "model_deleted", "model": "qwen-chat"}).encode()
        r = await c.post(HOOK, content=other, headers=_signed(other))
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        bad = b'{"model": "../etc"}'
        assert (await c.post(HOOK, content=bad, headers=_signed(bad))).status_code == 400
        assert (await c.post(HOOK, content=b"[", headers=_signed(b"["))).status_code == 400
        old = signed_headers(WebhookSettings.parse({"secret": SECRET}), body, time.time() - 3600)
        assert (await c.post(HOOK, content=body, headers=old)).status_code == 401
        assert (await c.post(HOOK, content=body)).status_code == 401
        big = b"{" + b" " * 5000 + b"}"
        assert (await c.post(HOOK, content=big, headers=_signed(big))).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 500
        assert (await c.post(HOOK, content=chunks())).status_code == 413
        am = b'{"alerts": []}'
        r = await c.post("/hooks/alertmanager", content=am,
                         headers={"Authorization": "Bearer am-token-0123456789abc"})
        assert r.status_code == 200 and r.json()["actions"] == []
    assert operator_of(ctx).calls == [("resync", "qwen-chat", None, "webhook")]
    text = ctx.metrics.render().decode()
    assert 'endpoint="/hooks/model-updated",result="refused_401"} 2.0' in text
    assert 'endpoint="/hooks/model-updated",result="refused_413"} 2.0' in text


async def test_keepalive_and_garbage(tmp_path: Path) -> None:
    async with serving(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            data += await asyncio.wait_for(reader.read(4096), 5)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        rest = await _closed(reader, 5)
        assert rest.startswith(b"HTTP/1.1 400") and b"200" not in rest
        writer.close()
        # a head that grows over 16 KiB is refused the same way
        reader, writer = await s.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000)
        assert (await _closed(reader, 5)).startswith(b"HTTP/1.1 400")
        writer.close()


# --- defects found in review (issue 11): each test failed on the h11 server it replaces ------

async def test_labels_are_routes_not_paths(tmp_path: Path) -> None:
    """A request path never becomes a metric label: unmatched paths count as "other"."""
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as c:
        for i in range(3):
            big = b"x" * 2000
            await c.post(f"/random-{i}", content=big)
            await c.post(f"/hooks/model-updated/../x{i}", content=big)
        await c.post(HOOK, content=b"x" * 2000)
    endpoints = {line.split('endpoint="')[1].split('"')[0]
                 for line in s.ctx.metrics.render().decode().splitlines() if 'endpoint="' in line}
    assert endpoints <= {"/hooks/model-updated", "/hooks/alertmanager", "other"}, endpoints


async def test_nan_timestamp_is_a_clean_401(tmp_path: Path) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as c:
        body = b'{"model": "m"}'
        for ts in ("nan", "inf", "-1", "1e999"):
            r = await c.post(HOOK, content=body, headers={
                "X-Model-Watcher-Timestamp": ts, "X-Model-Watcher-Signature": sign(SECRET, body, 0)})
            assert r.status_code == 401, (ts, r.status_code)
            assert "timestamp" in r.json()["error"]


async def test_a_crashing_handler_answers_500_and_the_listener_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as c:
        def boom(model: str | None = None) -> None:
            raise RuntimeError("operator exploded")
        operator_of(s.ctx).request_resync = boom  # type: ignore[method-assign]
        body = b'{"model": "qwen-chat"}'
        caplog.clear()
        r = await c.post(HOOK, content=body, headers=_signed(body))
        assert r.status_code == 500
        assert "operator exploded" not in r.text  # the reason is logged, not told to the client
        crashed = [rec for rec in caplog.records if "operator exploded" in rec.getMessage()]
        assert len(crashed) == 1 and crashed[0].exc_info is None, caplog.text
        assert (await c.get("/healthz")).status_code == 200
    assert 'result="error_500"} 1.0' in s.ctx.metrics.render().decode()


# --- limits ------------------------------------------------------------------------------------

async def test_chunked_body_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    """413 as soon as the running count passes the limit, while the body goes on; the rest is
    dropped (never buffered) until the connection is closed at the head deadline."""
    async with serving(tmp_path, head_deadline=0.5) as s:
        reader, writer = await s.connect()
        writer.write(b"POST /hooks/model-updated HTTP/1.1\r\nhost: x\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for _ in range(3):  # 1,536 bytes > 1,024
            writer.write(b"200\r\n" + b" " * 512 + b"\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413"), head

        async def more() -> None:  # and the body never ends
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    writer.write(b"200\r\n" + b" " * 512 + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.02)
        sender = asyncio.create_task(more())
        assert b"over the limit" in await _closed(reader, 5)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def test_slow_clients_are_cut(tmp_path: Path) -> None:
    async with serving(tmp_path, head_deadline=0.5, body_deadline=0.5) as s:
        silent_r, silent_w = await s.connect()                     # sends nothing
        trickle_r, trickle_w = await s.connect()                   # a head that never ends
        trickle_w.write(b"GET /healthz HTTP/1.1\r\n")
        body_r, body_w = await s.connect()                         # a body that never ends
        body_w.write(b"POST /hooks/model-updated HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")

        async def trickle() -> None:
            for _ in range(40):
                await asyncio.sleep(0.1)
                trickle_w.write(b"x-a: b\r\n")
        feeder = asyncio.create_task(trickle())
        assert await _closed(silent_r, 5) == b""
        assert await _closed(trickle_r, 5) == b""
        assert (await _closed(body_r, 5)).startswith(b"HTTP/1.1 408")
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        for w in (silent_w, trickle_w, body_w):
            w.close()
        async with httpx.AsyncClient(base_url=s.base) as c:   # and everyone else is served
            assert (await c.get("/healthz")).status_code == 200


async def test_connections_are_capped(tmp_path: Path) -> None:
    async with serving(tmp_path) as s:
        idle = [await s.connect() for _ in range(transport.MAX_CONNECTIONS)]
        async with httpx.AsyncClient(base_url=s.base) as c:
            assert (await c.get("/healthz")).status_code == 503
            for _, w in idle:
                w.close()
            for _ in range(100):
                if (await c.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await c.get("/healthz")).status_code == 200


# --- lifecycle ---------------------------------------------------------------------------------

async def test_shutdown_cuts_in_flight_requests_within_the_grace(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(tmp_path, body_deadline=60, grace=1.0) as s, httpx.AsyncClient(base_url=s.base) as c:
        assert (await c.get("/healthz")).status_code == 200   # an idle keep-alive connection
        upload_r, upload_w = await s.connect()                 # a request in flight
        upload_w.write(b"POST /hooks/model-updated HTTP/1.1\r\nhost: x\r\n"
                       b"content-length: 100\r\n\r\n{")
        await upload_w.drain()
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        s.task.cancel()
        await asyncio.gather(s.task, return_exceptions=True)
        took = time.monotonic() - t0
        assert s.task.cancelled()
        assert took < 1.0 + 2.0, took
        assert (await _closed(upload_r, 2)).startswith(b"HTTP/1.1 503")
        upload_w.close()
        with pytest.raises(httpx.TransportError):
            await c.get("/healthz")
    gc.collect()
    await asyncio.sleep(0)
    noisy = [r for r in caplog.records
             if r.exc_info or r.levelno >= logging.ERROR or "never retrieved" in r.getMessage()]
    assert not noisy, caplog.text


async def test_serve_lifecycle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
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
        r: Any = None
        for _ in range(100):
            try:
                r = await c.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.02)
        assert r is not None and r.status_code == 200
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_the_server_library_loads_only_with_the_api_on(tmp_path: Path) -> None:
    """The daemon imports watcher.api.server always; uvicorn and Starlette only with [api] on,
    and click (uvicorn's CLI dependency, which httpx would import at start) not at all."""
    code = """if True:
        import asyncio, sys
        from pathlib import Path
        import watcher.daemon, httpx  # as the entry point does: watcher first
        from watcher.api import server
        from watcher.fakes.context import feature_context
        from watcher.settings import ApiSettings
        heavy = ("uvicorn", "starlette", "prometheus_client", "click")
        off = feature_context(Path(sys.argv[1]))
        server.preload(off.settings)
        asyncio.run(server.serve(off))
        print(sorted(m for m in heavy if m in sys.modules))
        on = feature_context(Path(sys.argv[1]), api=ApiSettings(enabled=True, port=int(sys.argv[2])))
        server.preload(on.settings)
        print(sorted(m for m in heavy if m in sys.modules))
        asyncio.run(server.serve(on))   # the port is taken: returns
    """
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(busy.getsockname()[1])],
                             capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out[0] == "[]", out
    assert {"uvicorn", "starlette"} <= set(json.loads(out[1].replace("'", '"'))), out
    assert "click" in out[1]  # uvicorn's own __init__ imports it: only with the API on
