"""The loopback HTTP listener: health, status, metrics and the authenticated webhooks.

    GET  /healthz                200 {"status": "ok", "ready": bool}: the loop answers
    GET  /status                 the state's status() as JSON
    GET  /metrics                Prometheus text exposition (watcher/observability/metrics.py)
    POST /hooks/model-updated    watcher/api/webhook.py
    POST /hooks/alertmanager     watcher/api/alertmanager.py

HTTP/1.1 is parsed by h11 (a small, well-tested sans-I/O parser) on asyncio streams; no
framework. Bodies are limited before they are read (Content-Length over the limit: 413 and the
connection is closed), each read and each whole request has a deadline, and the number of
open connections is capped. Bound to settings.api.host, 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import h11

from watcher.api.alertmanager import AlertmanagerHook
from watcher.api.webhook import ModelUpdatedHook, Refused, Verifier, WebhookSettings
from watcher.observability.metrics import CONTENT_TYPE as METRICS_TYPE

if TYPE_CHECKING:
    from watcher.features import FeatureContext

log = logging.getLogger("watcher.api.server")

READ_TIMEOUT = 10.0      # per read: an idle keep-alive connection is closed after this
REQUEST_DEADLINE = 30.0  # a whole request, headers and body (no slow-loris hold)
MAX_CONNECTIONS = 64
MAX_HEADER_BYTES = 16 * 1024
JSON_TYPE = "application/json"


class Api:
    """Routes requests of one daemon; `serve_connection` is the asyncio stream handler."""

    def __init__(self, ctx: FeatureContext, webhook: WebhookSettings) -> None:
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.limit = webhook.max_body_bytes
        verifier = Verifier(webhook)
        self.hooks: dict[str, ModelUpdatedHook | AlertmanagerHook] = {
            ModelUpdatedHook.path: ModelUpdatedHook(ctx, verifier),
            AlertmanagerHook.path: AlertmanagerHook(ctx, verifier, webhook.alertmanager),
        }
        self._open = 0

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while await self._one_request(conn, reader, writer, peer):
                conn.start_next_cycle()
        except (TimeoutError, ConnectionError, h11.RemoteProtocolError) as exc:
            log.debug("api: connection from %s ended: %s", peer, type(exc).__name__)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _one_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, peer: str) -> bool:
        """Serve one request; False when the connection must close."""
        async with asyncio.timeout(REQUEST_DEADLINE):
            return await self._read_and_answer(conn, reader, writer, peer)

    async def _read_and_answer(self, conn: h11.Connection, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter, peer: str) -> bool:
        event = await _next_event(conn, reader)
        if not isinstance(event, h11.Request):
            return False
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace").partition("?")[0]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            status, body, ctype = self._refused(target, peer, Refused(
                413, f"body of {declared} bytes is over the limit of {self.limit}"))
            await _send(conn, writer, status, body, ctype, close=True)
            await _discard(reader)
            return False
        body_or_none = await _read_body(conn, reader, self.limit)
        if body_or_none is None:
            status, body, ctype = self._refused(target, peer, Refused(
                413, f"body is over the limit of {self.limit} bytes"))
            await _send(conn, writer, status, body, ctype, close=True)
            await _discard(reader)
            return False
        status, body, ctype = await self.route(method, target, headers, body_or_none, peer)
        await _send(conn, writer, status, body, ctype)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def route(self, method: str, path: str, headers: dict[str, str], body: bytes,
                    peer: str) -> tuple[int, bytes, str]:
        if path in self.hooks:
            if method != "POST":
                return _json(405, {"error": "use POST"})
            try:
                status, payload = await self.hooks[path].handle(headers, body, peer)
            except Refused as exc:
                return self._refused(path, peer, exc)
            self.metrics.webhook(path, "accepted")
            return _json(status, payload)
        if method != "GET":
            return _json(405 if path in ("/healthz", "/status", "/metrics") else 404,
                         {"error": "not found"})
        if path == "/healthz":
            return _json(200, {"status": "ok",
                               "ready": self.ctx.ready()})
        if path == "/status":
            return _json(200, self._status())
        if path == "/metrics":
            return 200, self.metrics.render(), METRICS_TYPE
        return _json(404, {"error": "not found"})

    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.ctx.state.status()
        return status

    def _refused(self, path: str, peer: str, exc: Refused) -> tuple[int, bytes, str]:
        log.warning("api: %s from %s refused (%d): %s", path, peer, exc.status, exc.reason,
                    extra={"reason": exc.reason})
        self.metrics.webhook(path, f"refused_{exc.status}")
        return _json(exc.status, {"error": exc.reason})


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload, default=str).encode(), JSON_TYPE


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    return f"{info[0]}:{info[1]}" if isinstance(info, tuple) and len(info) >= 2 else "?"


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
        conn.receive_data(data)  # b"" means the peer closed: h11 answers ConnectionClosed


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader,
                     limit: int) -> bytes | None:
    """The request body, or None once it grows over `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")


async def _discard(reader: asyncio.StreamReader, limit: int = 8 << 20) -> None:
    """Read and drop what a refused sender still sends (bounded), so that closing does not
    reset the connection before the client has read the refusal."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(1.0):
            while limit > 0 and (chunk := await reader.read(65536)):
                limit -= len(chunk)


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes,
                ctype: str, close: bool = False) -> None:
    headers = [("content-type", ctype), ("content-length", str(len(body)))]
    if close:
        headers.append(("connection", "close"))
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def serve(ctx: FeatureContext) -> None:
    """Listen on settings.api until cancelled; returns at once when the API is disabled."""
    settings = ctx.settings.api
    if not settings.enabled:
        return
    api = Api(ctx, WebhookSettings.parse(ctx.settings.webhook))
    try:
        server = await asyncio.start_server(api.serve_connection, settings.host, settings.port,
                                            reuse_address=True)
    except OSError as exc:
        # the daemon goes on without its API: updates matter more than the listener
        log.error("api: cannot listen on %s:%d: %s", settings.host, settings.port,
                  exc.strerror or exc)
        return
    where = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info("api: listening on %s", where)
    try:
        async with server:
            await server.serve_forever()
    finally:
        server.close()
