"""The API's HTTP/1.1 transport: uvicorn's h11 protocol inside the daemon's own event loop.

uvicorn parses HTTP (h11) and enforces: request heads up to `MAX_HEADER_BYTES` (else 400),
`MAX_CONNECTIONS` open connections (a request over it is answered 503), idle keep-alive
connections closed after `KEEP_ALIVE` seconds; on shutdown it stops accepting, lets requests
in flight finish within `grace`, then cancels them (watcher/api/guard.py answers those 503).
Body size and body deadline are the application's (watcher/api/app.py).

We do not call `uvicorn.Server.serve()`: it installs SIGINT/SIGTERM handlers (the daemon owns
signals) and wakes ten times a second for its Date header (an idle daemon must not tick). Its
`startup` on a socket we bound and its `shutdown` are the whole server without either.

uvicorn has no deadline for a request's head: a client that connects and sends nothing, or a
header line every few seconds, would hold a connection (and one of `MAX_CONNECTIONS`) for
ever. `HeadDeadlineProtocol` adds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, ClassVar

import uvicorn
from uvicorn.lifespan.off import LifespanOff
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from starlette.types import ASGIApp

log = logging.getLogger("watcher.api.server")

MAX_CONNECTIONS = 64
MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE = 5           # seconds an idle keep-alive connection stays open
HEAD_DEADLINE = 10.0     # seconds a request's head (request line + headers) may take
SHUTDOWN_GRACE = 3.0     # seconds requests in flight get to finish when the API stops


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a connection that has not sent a whole request head
    within `head_deadline` seconds of opening (or of its previous answer) is closed."""

    head_deadline: ClassVar[float] = HEAD_DEADLINE
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def cut(self) -> None:
        """Close the connection now (after the shutdown grace)."""
        self.transport.close()

    def _arm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_deadline, self._head_late)

    def _head_late(self) -> None:
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            peer = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info("api: closing a connection from %s: no request within %g s", peer,
                     self.head_deadline)
            self.transport.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError when it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


async def run(app: ASGIApp, sock: socket.socket, *, head_deadline: float = HEAD_DEADLINE,
              grace: float = SHUTDOWN_GRACE) -> None:
    """Serve `app` on the listening `sock` until cancelled. Then: stop accepting, close idle
    connections, let requests in flight finish within `grace` seconds, cut what remains, close
    `sock`, and return (re-raising the cancellation) within about `grace` + 1 s."""
    protocol = type("ApiProtocol", (HeadDeadlineProtocol,), {"head_deadline": head_deadline})
    config = uvicorn.Config(
        app, http=protocol, ws="none", lifespan="off", interface="asgi3",
        log_config=None, access_log=False, proxy_headers=False, server_header=False,
        date_header=False, limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=max(1, round(grace)))
    config.load()
    _quiet_uvicorn()
    server = uvicorn.Server(config)
    server.lifespan = LifespanOff(config)
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    try:
        await asyncio.get_running_loop().create_future()  # until cancelled
    finally:
        await _stop(server, sock, grace)


def _quiet_uvicorn() -> None:
    """uvicorn's INFO lines ("Shutting down", ...) say what ours say, and the ERROR it logs when
    the shutdown grace is over is the expected cut that guard.py logs once per request; its
    warnings (invalid requests, the connection cap) stay."""
    logger = logging.getLogger("uvicorn.error")
    logger.setLevel(logging.WARNING)
    if _not_the_cut not in logger.filters:
        logger.addFilter(_not_the_cut)


def _not_the_cut(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Cancel %s running task(s)")


async def _stop(server: uvicorn.Server, sock: socket.socket, grace: float) -> None:
    try:
        async with asyncio.timeout(grace + 1.0):
            await server.shutdown(sockets=[sock])
    except TimeoutError:
        log.warning("api: shutdown took over %g s; cutting the remaining connections", grace + 1)
    finally:
        # the requests uvicorn cancelled still answer (503, watcher/api/guard.py) before the cut
        if tasks := set(server.server_state.tasks):
            await asyncio.wait(tasks, timeout=0.5)
        for connection in list(server.server_state.connections):
            if isinstance(connection, HeadDeadlineProtocol):
                connection.cut()
        with contextlib.suppress(OSError):
            sock.close()
        log.info("api: stopped")
