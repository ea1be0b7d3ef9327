"""`http` target: POST the spec (or its `model` section) to the server's admin endpoint.

2xx is accepted; anything else is a TargetError carrying the server's answer. Only
connection-level failures (refused, reset, closed before an answer) are retried, with
tenacity's exponential backoff: the body is the complete desired state, so a repeat is
idempotent. An HTTP answer (any status) and a timeout are never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from watcher.core.errors import TargetError
from watcher.core.spec import ModelSpec
from watcher.placeholders import fill
from watcher.plugins import PluginContext, parse_options
from watcher.targets.base import unreachable

log = logging.getLogger("watcher.targets.http")
#: Connection-level failures: nothing (or nothing usable) came back from the server.
RETRIED = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="admin endpoint; {model} is replaced by the model name")
    remove_url: str | None = Field(None, description="DELETE here when a document is deleted")
    body: Literal["spec", "model"] = "spec"
    timeout: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=1)
    token: SecretStr | None = Field(None, description="sent as `Authorization: Bearer ...`")
    hot_paths: tuple[str, ...] = ("model.",)


class HttpTarget:
    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self.hot_paths = options.hot_paths
        headers = {"User-Agent": "model-watcher"}
        if options.token is not None:
            headers["Authorization"] = f"Bearer {options.token.get_secret_value()}"
        self._client = httpx.AsyncClient(timeout=options.timeout, headers=headers)

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> HttpTarget:
        return cls(parse_options(HttpOptions, options, "target"))

    async def _send(self, method: str, url: str, json: Any = None) -> httpx.Response:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRIED),
            stop=stop_after_attempt(self.options.retries),
            wait=wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.2),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._client.request(method, url, json=json)
        except httpx.HTTPError as exc:
            raise unreachable(f"{method} {url}", exc, self.options.timeout) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        url = fill(self.options.url, spec.name)
        body = spec.canonical() if self.options.body == "spec" else spec.canonical()["model"]
        resp = await self._send("POST", url, body)
        if not resp.is_success:
            raise TargetError(f"POST {url}: status {resp.status_code}: {resp.text[:300].strip()}")

    async def remove(self, name: str) -> None:
        if self.options.remove_url is None:
            return
        url = fill(self.options.remove_url, name)
        resp = await self._send("DELETE", url)
        if not resp.is_success and resp.status_code != 404:
            raise TargetError(f"DELETE {url}: status {resp.status_code}: {resp.text[:300].strip()}")

    async def aclose(self) -> None:
        await self._client.aclose()
