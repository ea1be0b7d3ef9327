"""The restart contract: prepare, start, stop, list. Traffic is the Router's (routers/base.py).

    prepare(spec)        fetch what start needs (pull the image); touches nothing running
    start(spec, rev)     an instance serving `spec`: beside the current one where the runtime
                         can (containers), or in its place (a command, a systemd unit)
    stop(instance)       stop and remove it; idempotent
    instances(model)     what runs for `model` now (found again after a daemon restart)

The executor tells the two kinds apart by asking, not by a flag: after `start`, if another
instance of the model still runs, the new one was started beside it (traffic moves through
the router, then the old one is stopped; a failure stops the new one and the old never
stopped serving); if none does, it was started in place (a failure starts the previous spec
again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from watcher.core.spec import ModelSpec


@dataclass(frozen=True)
class Instance:
    id: str
    model: str
    revision: str
    #: host:port traffic is routed to (None: the server's address does not change)
    address: str | None = None
    #: base URL of its health probe (None: the health settings name the URL)
    health_url: str | None = None
    #: what it runs, for history and the audit ("registry/img@sha256:..."); None: nothing to say
    artifact: str | None = None
    #: a name an operator recognizes (container name, unit name)
    name: str = ""


@runtime_checkable
class Runtime(Protocol):
    async def prepare(self, spec: ModelSpec) -> None:
        """Fetch what `start` needs. Touches nothing running."""
        ...

    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        """Start an instance serving `spec`, beside the current one where possible; raise
        RuntimeStartError (having removed what it started) when it cannot."""
        ...

    async def stop(self, instance: Instance) -> None:
        """Stop and remove `instance`; idempotent."""
        ...

    async def instances(self, model: str) -> list[Instance]:
        """What runs for `model` now, newest first."""
        ...

    async def aclose(self) -> None: ...
