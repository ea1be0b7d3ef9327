"""The API's routes on Starlette: one route table, JSON answers, labels from the table.

    GET  /healthz                200 {"status": "ok", "ready": bool} (`ctx.ready()`)
    GET  /status                 the state's status() as JSON
    GET  /metrics                Prometheus text exposition (watcher/observability/metrics.py)
    GET  /, /models/{name}, /audit   the read-only status page (watcher/api/page.py)
    POST /hooks/model-updated    watcher/api/webhook.py
    POST /hooks/alertmanager     watcher/api/alertmanager.py

Starlette's router answers 404 to an unknown path and 405 (with `Allow`) to a known path asked
with another method. The hooks verify and parse with transport-free functions (headers + body
+ now -> reply or `Refused`); this module only reads the body for them, within
`webhook.max_body_bytes` and a deadline, and turns their verdict into an answer. A new page
is one more line in `Api.routes`. Metric labels are a route's path from that table, or
"other": never the path a client sent.

Imported only when `[api] enabled = true` (watcher/api/server.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from watcher.api.alertmanager import AlertmanagerHook
from watcher.api.guard import Guard, route_label
from watcher.api.page import StatusPage
from watcher.api.webhook import ModelUpdatedHook, Refused, Verifier, WebhookSettings
from watcher.observability.metrics import CONTENT_TYPE as METRICS_TYPE

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from watcher.features import FeatureContext

log = logging.getLogger("watcher.api.server")

#: a webhook's whole body must arrive within this (a slow sender does not hold a request)
BODY_DEADLINE = 10.0
JSON_TYPE = "application/json"


class Api:
    """The endpoints of one daemon's API over its feature context."""

    def __init__(self, ctx: FeatureContext, webhook: WebhookSettings,
                 body_deadline: float = BODY_DEADLINE) -> None:
        self.ctx = ctx
        self.limit = webhook.max_body_bytes
        self.body_deadline = body_deadline
        self.page = StatusPage(ctx)
        verifier = Verifier(webhook)
        self.hooks: dict[str, ModelUpdatedHook | AlertmanagerHook] = {
            ModelUpdatedHook.path: ModelUpdatedHook(ctx, verifier),
            AlertmanagerHook.path: AlertmanagerHook(ctx, verifier, webhook.alertmanager),
        }

    def routes(self) -> list[Route]:
        """The route table: every path the API answers, in one place."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/status", self.status, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/", self.page.index, methods=["GET"]),
            Route("/models/{name}", self.page.model, methods=["GET"]),
            Route("/audit", self.page.audit, methods=["GET"]),
            *(Route(path, self.hook, methods=["POST"]) for path in self.hooks),
        ]

    def app(self) -> ASGIApp:
        """The ASGI application: the router behind the guard (crash -> 500, one log line)."""
        router = Router(self.routes(), redirect_slashes=False, default=_not_found)
        return Guard(router, on_crash=self._crashed)

    async def healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok", "ready": self.ctx.ready()})

    async def status(self, request: Request) -> Response:
        return _json(200, self.ctx.state.status())

    async def metrics(self, request: Request) -> Response:
        return Response(self.ctx.metrics.render(), 200, media_type=METRICS_TYPE)

    async def hook(self, request: Request) -> Response:
        """Read the body within the limits, then let the hook decide."""
        route = route_label(request.scope)
        peer = _peer(request)
        try:
            body = await read_body(request, self.limit, self.body_deadline)
            status, payload = await self.hooks[route].handle(request.headers, body, peer)
        except Refused as exc:
            log.warning("api: %s from %s refused (%d): %s", route, peer, exc.status, exc.reason,
                        extra={"reason": exc.reason})
            self.ctx.metrics.webhook(route, f"refused_{exc.status}")
            return _json(exc.status, {"error": exc.reason})
        self.ctx.metrics.webhook(route, "accepted")
        return _json(status, payload)

    def _crashed(self, route: str) -> None:
        if route in self.hooks:
            self.ctx.metrics.webhook(route, "error_500")


async def read_body(request: Request, limit: int, deadline: float) -> bytes:
    """The request body, or Refused: 413 as soon as it is known or seen to exceed `limit`
    (a declared Content-Length, or the running count of a chunked body: the rest is never
    read), 408 when it has not all arrived within `deadline` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, f"body not received within {deadline:g} s") from None
    except ClientDisconnect:
        raise Refused(400, "the client closed the connection before the body ended") from None
    return b"".join(chunks)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await _json(404, {"error": "not found"})(scope, receive, send)


def _json(status: int, payload: object) -> Response:
    return Response(json.dumps(payload, default=str).encode(), status, media_type=JSON_TYPE)


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else "?"
