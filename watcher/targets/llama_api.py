"""The slice of llama-server's router API (router mode: `--models-preset`, no `-m`) the
`llama-server` target uses, with the behaviour of the pinned version (see docs/llama.md):

    GET  /props                 {"role": "router", "max_instances": --models-max}
    GET  /models[?reload=1]     {"data": [{"id", "aliases", "status": {"value", "failed"?,
                                "exit_code"?}}]}; `reload=1` re-reads the preset first and
                                returns only after running entries whose options changed (or
                                that left the preset) are unloaded
    POST /models/load   {"model"}   200 {"success": true} at once (loading goes on: poll
                                `/models`); 400 "model is already running"
    POST /models/unload {"model"}   200; 400 "model is not running"
    POST /completion?autoload=false {"model", "prompt", "n_predict", "return_tokens"}

Errors come as `{"error": {"code", "message", "type"}}`. Only connection-level failures
(refused, reset, closed before an answer) are retried, with tenacity: every call here is
idempotent (a repeated load answers "already running", a repeated reload re-reads the same
file). An HTTP answer and a timeout are never retried.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from watcher.core.errors import TargetError
from watcher.targets.base import error_text

RETRIED = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class RouterClient:
    def __init__(self, url: str, *, token: SecretStr | None, timeout: float, retries: int) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        headers = {"User-Agent": "model-watcher"}
        if token is not None:  # llama-server --api-key: the token only ever leaves in the header
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._client = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None, seconds: float | None = None) -> httpx.Response:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRIED), stop=stop_after_attempt(self.retries),
            wait=wait_exponential_jitter(multiplier=0.1, max=2, jitter=0.1), reraise=True,
        )
        what = f"{method} {self.base}{path}"
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._client.request(method, path, json=body, params=params,
                                                      timeout=seconds or self.timeout)
        except httpx.TimeoutException as exc:
            raise TargetError(f"{what}: no answer within {seconds or self.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise TargetError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def models(self, *, reload: bool = False) -> dict[str, dict[str, Any]]:
        """Router entries by id. `reload` re-reads the preset (and unloads what changed)."""
        params = {"reload": "1"} if reload else None
        resp = await self._call("GET", "/models", params=params,
                                seconds=max(self.timeout, 60.0) if reload else None)
        if resp.status_code != 200:
            raise TargetError(f"GET /models: status {resp.status_code}: {error_text(resp)}")
        try:
            return {str(m["id"]): m for m in resp.json()["data"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"GET /models: unexpected answer ({exc!r})") from exc

    async def max_instances(self) -> int:
        """The router's `--models-max` (0: unlimited), from `GET /props`."""
        resp = await self._call("GET", "/props")
        if resp.status_code != 200:
            raise TargetError(f"GET /props: status {resp.status_code}: {error_text(resp)}")
        try:
            body = resp.json()
            if body.get("role") != "router":
                raise TargetError(f"{self.base} is not a llama-server in router mode "
                                  "(start it with --models-preset and no -m)")
            return int(body.get("max_instances") or 0)
        except (ValueError, TypeError, AttributeError) as exc:
            raise TargetError(f"GET /props: unexpected answer ({exc!r})") from exc

    async def load(self, model: str) -> None:
        resp = await self._call("POST", "/models/load", body={"model": model})
        if resp.status_code != 200 and "already running" not in error_text(resp):
            raise TargetError(f"load {model}: status {resp.status_code}: {error_text(resp)}")

    async def unload(self, model: str) -> None:
        resp = await self._call("POST", "/models/unload", body={"model": model})
        if resp.status_code != 200 and "not running" not in error_text(resp):
            raise TargetError(f"unload {model}: status {resp.status_code}: {error_text(resp)}")

    async def wait_loaded(self, model: str, seconds: float, interval: float) -> None:
        """Until `model` is `loaded`; TargetError when its instance exits or time runs out."""
        deadline = time.monotonic() + seconds
        seen_loading = False
        while True:
            entry = (await self.models()).get(model)
            if entry is None:
                raise TargetError(f"{model}: not in the router's model list (preset not read?)")
            status = entry.get("status") or {}
            value = status.get("value")
            if value in ("loaded", "sleeping"):
                return
            if status.get("failed"):
                raise TargetError(f"{model}: the server could not load it "
                                  f"(instance exit code {status.get('exit_code')})")
            seen_loading = seen_loading or value == "loading"
            if value == "unloaded" and seen_loading:
                raise TargetError(f"{model}: the instance stopped while loading")
            if time.monotonic() >= deadline:
                raise TargetError(f"{model}: not loaded within {seconds:g}s (status {value})")
            await asyncio.sleep(interval)

    async def wait_gone(self, model: str, seconds: float, interval: float) -> None:
        """Until `model` is not running (unloaded or no longer listed)."""
        deadline = time.monotonic() + seconds
        while True:
            entry = (await self.models()).get(model)
            value = ((entry or {}).get("status") or {}).get("value")
            if entry is None or value == "unloaded":
                return
            if time.monotonic() >= deadline:
                raise TargetError(f"{model}: still {value} {seconds:g}s after unloading")
            await asyncio.sleep(interval)

    async def complete(self, model: str, prompt: str, n_predict: int) -> list[int]:
        """Token ids of a temperature-0 completion from `model`, never loading it on the way."""
        body = {"model": model, "prompt": prompt, "n_predict": n_predict, "temperature": 0,
                "top_k": 1, "return_tokens": True, "cache_prompt": False}
        resp = await self._call("POST", "/completion", body=body, params={"autoload": "false"})
        if resp.status_code != 200:
            raise TargetError(f"{model}: test completion: status {resp.status_code}: {error_text(resp)}")
        try:
            tokens = [int(t) for t in resp.json()["tokens"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"{model}: test completion: unexpected answer ({exc!r})") from exc
        if not tokens:
            raise TargetError(f"{model}: test completion returned no tokens")
        return tokens
