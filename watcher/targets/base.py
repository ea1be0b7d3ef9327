"""The hot-swap contract: put a spec into the running model server through its own API."""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import httpx

from watcher.core.errors import TargetError
from watcher.core.spec import ModelSpec


@runtime_checkable
class Target(Protocol):
    #: Dotted path prefixes this target can change in place, e.g. ("model.",) or
    #: ("model.adapters",). A plan touching anything else needs a restart.
    hot_paths: tuple[str, ...]

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        """Make the server serve `spec`. Raises TargetError; on error the server should
        still serve `previous` (servers that load-before-drop guarantee it)."""
        ...

    async def remove(self, name: str) -> None:
        """The model's document was deleted and the settings say to unload it."""
        ...

    async def aclose(self) -> None: ...


def unreachable(what: str, exc: httpx.HTTPError, timeout: float) -> TargetError:
    """A transport failure talking to the model server (no answer in time, connection
    refused or reset): transient, so the pipeline retries the apply a few times."""
    if isinstance(exc, httpx.TimeoutException):
        return TargetError(f"{what}: no answer within {timeout:g}s", transient=True)
    return TargetError(f"{what}: {type(exc).__name__}: {exc}", transient=True)


def error_text(resp: httpx.Response) -> str:
    """A server's error answer as one short line: OpenAI's `{"error": {"message"}}` (vLLM,
    llama-server), a top-level `message` or FastAPI's `detail`, else the raw body."""
    with contextlib.suppress(ValueError):
        body = resp.json()
        if isinstance(body, dict):
            inner = body.get("error")
            if isinstance(inner, dict) and isinstance(inner.get("message"), str):
                return " ".join(inner["message"].split())[:300]
            for key in ("message", "detail"):
                if isinstance(body.get(key), str):
                    return " ".join(body[key].split())[:300]
    return " ".join(resp.text.split())[:300] or resp.reason_phrase
