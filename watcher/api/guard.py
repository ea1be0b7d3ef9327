"""The API's outermost ASGI layer: what every request gets, whatever its route.

- A crash in a handler answers 500 and logs one line (method, route label, the exception's
  type and message); the listener and every other request go on.
- A request still running when the server's shutdown grace is over answers 503.

Route labels come from the router's table (Starlette puts the matched route in the scope,
also for a 405): the route's path template, or "other" for a path no route matches. A path a
client made up therefore never becomes a log field's or metric's value.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("watcher.api.server")

OTHER = "other"


def route_label(scope: Scope) -> str:
    """The matched route's path from the route table, or "other" (bounded by construction)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else OTHER


class Guard:
    """Wraps the router; `on_crash(route_label)` is told of every 500 (for metrics)."""

    def __init__(self, app: ASGIApp, on_crash: Callable[[str], None] = lambda _: None) -> None:
        self.app = app
        self.on_crash = on_crash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are not served
            return
        started = False

        async def send_and_track(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_track)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs once its shutdown grace is over: the request
            # is cut, which is not an error of ours
            log.info("api: %s %s cut by shutdown", scope["method"], route_label(scope))
            if not started:
                await _answer(send, 503, "the daemon is stopping")
        except Exception as exc:
            label = route_label(scope)
            log.error("api: %s %s failed: %s", scope["method"], label, _one_line(exc))
            self.on_crash(label)
            if not started:
                await _answer(send, 500, "internal error (logged)")


_CLOSE = (b"connection", b"close")


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), _CLOSE]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300] if text.strip() else type(exc).__name__
