"""The loopback HTTP API as a daemon feature: health, status, metrics, authenticated webhooks.

The daemon imports this module whatever the settings; it imports nothing heavy. Only when
`[api] enabled = true` does `serve` import the routes (watcher/api/app.py, Starlette) and the
transport (watcher/api/transport.py, uvicorn), so a daemon without the API pays neither their
memory nor their import time. Bound to `settings.api.host`, 127.0.0.1 by default.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.features import FeatureContext
    from watcher.settings import Settings

log = logging.getLogger("watcher.api.server")


def preload(settings: Settings) -> None:
    """Import the API's libraries now if it is enabled (the daemon calls this before its
    start-up work, so that these modules do not land between its allocations)."""
    if settings.api.enabled:
        import watcher.api.app
        import watcher.api.transport  # noqa: F401


async def serve(ctx: FeatureContext) -> None:
    """Listen on settings.api until cancelled; returns at once when the API is disabled or its
    port cannot be had (logged: the daemon goes on, updates matter more than the listener).
    Cancelled: stops within a few seconds (watcher/api/transport.py `run`)."""
    settings = ctx.settings.api
    if not settings.enabled:
        return
    from watcher.api.app import Api
    from watcher.api.transport import listen, run
    from watcher.api.webhook import WebhookSettings

    api = Api(ctx, WebhookSettings.parse(ctx.settings.webhook))
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:
        log.error("api: cannot listen on %s:%d: %s", settings.host, settings.port,
                  exc.strerror or exc)
        return
    host, port = sock.getsockname()[:2]
    log.info("api: listening on %s:%d", host, port)
    await run(api.app(), sock)
