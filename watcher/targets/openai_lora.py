"""`openai-lora` target: reconcile `model.adapters` with the LoRA adapters a vLLM server has.

vLLM (started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) offers:

    GET  /v1/models                 {"object": "list", "data": [card...]}; a LoRA card has
                                    `id` (the adapter name), `root` (its path), `parent`
                                    (the base model); base model cards have parent null
    POST /v1/load_lora_adapter      {"lora_name", "lora_path"[, "load_inplace"]} -> 200 text
    POST /v1/unload_lora_adapter    {"lora_name"} -> 200 text; 404 when not loaded

Errors are JSON: `{"message", "type", "code"}` (older) or `{"error": {...}}` (newer).

`apply` steps: read what is loaded -> load adapters that are missing, and reload those whose
path or digest changed (`load_inplace`, or unload+load on servers without it) -> unload
adapters this target loaded before that the spec no longer lists (or, with `prune: all`,
every adapter not listed) -> read back and check. On a failure it undoes its own steps in
reverse (best effort) and raises TargetError with the server's message.

Which adapters a model owns is kept in `STATE_DIR/openai-lora/<model>.json`, so `remove`
and pruning work across daemon restarts. This target is covered by a contract test against
vLLM's documented shapes (vLLM cannot run on the project's machines).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from watcher.core.errors import TargetError
from watcher.core.spec import Adapter, ModelSpec
from watcher.core.verify import local_path
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.targets.base import error_text, unreachable
from watcher.targets.v2repo import admin_client

log = logging.getLogger("watcher.targets.openai_lora")


class OpenAILoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="the server's base URL, e.g. http://127.0.0.1:8000")
    base_model: str | None = Field(None, description="only adapters on this base model count")
    prune: Literal["managed", "all"] = Field(
        "managed", description="unload only adapters this target loaded, or every unlisted one"
    )
    inplace: bool = Field(True, description="reload changed adapters with load_inplace")
    timeout: float = Field(120.0, gt=0, description="seconds one load may take")
    token: SecretStr | None = Field(None, description="vLLM --api-key, sent as Bearer")
    hot_paths: tuple[str, ...] = ("model.adapters",)


@dataclass(frozen=True)
class _Step:
    """One change made to the server, with what undoes it."""

    action: Literal["load", "reload", "unload"]
    name: str
    path: str
    undo_path: str | None = None  # reload/unload: the path that was loaded before


def adapter_path(adapter: Adapter) -> str:
    """What vLLM gets as `lora_path`: the local path of a file:// URI, else the URI as is."""
    path = local_path(adapter.uri)
    return str(path) if path is not None else adapter.uri


class OpenAILoraTarget:
    def __init__(self, options: OpenAILoraOptions, state_dir: Path) -> None:
        self.options = options
        self.hot_paths = options.hot_paths
        self.base = options.url.rstrip("/")
        self.state_dir = state_dir / "openai-lora"
        self._client = admin_client(options.token, options.timeout)

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> OpenAILoraTarget:
        return cls(parse_options(OpenAILoraOptions, options, "target"), ctx.state_dir)

    # -- the server's API ---------------------------------------------------------------

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        url = f"{self.base}{path}"
        try:
            return await self._client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise unreachable(f"{method} {url}", exc, self.options.timeout) from exc

    async def loaded(self) -> dict[str, str]:
        """Adapter name -> path, for adapters on `base_model` (any base when unset)."""
        resp = await self._call("GET", "/v1/models")
        if resp.status_code != 200:
            raise TargetError(f"GET /v1/models: status {resp.status_code}: {error_text(resp)}")
        try:
            cards = resp.json()["data"]
            return {
                str(c["id"]): str(c.get("root") or "")
                for c in cards
                if c.get("parent") and self.options.base_model in (None, c["parent"])
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"GET /v1/models: unexpected answer ({exc!r})") from exc

    async def _load(self, name: str, path: str, inplace: bool = False) -> None:
        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if inplace:
            body["load_inplace"] = True
        resp = await self._call("POST", "/v1/load_lora_adapter", body)
        if resp.status_code != 200:
            raise _api_error(f"load adapter {name} from {path}", resp)

    async def _unload(self, name: str) -> bool:
        """False when the server did not have it (404)."""
        resp = await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if resp.status_code == 404 and "lora" in error_text(resp).lower():
            return False
        if resp.status_code != 200:
            raise _api_error(f"unload adapter {name}", resp)
        return True

    async def _reload(self, name: str, path: str) -> None:
        if self.options.inplace:
            try:
                await self._load(name, path, inplace=True)
                return
            except TargetError as exc:
                if "already been loaded" not in exc.reason:
                    raise
                # a vLLM without load_inplace ignores the field: fall back to unload+load
        await self._unload(name)
        await self._load(name, path)

    # -- ownership, kept across restarts ------------------------------------------------

    def _owned_file(self, model: str) -> Path:
        return self.state_dir / f"{model}.json"

    def owned(self, model: str) -> set[str]:
        try:
            return set(json.loads(self._owned_file(model).read_text())["adapters"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return set()

    def _set_owned(self, model: str, names: set[str]) -> None:
        path = self._owned_file(model)
        if names:
            write_atomically(path, json.dumps({"adapters": sorted(names)}).encode())
        else:
            path.unlink(missing_ok=True)

    # -- the Target contract ------------------------------------------------------------

    def plan(self, spec: ModelSpec, previous: ModelSpec | None,
             loaded: dict[str, str]) -> list[_Step]:
        """The steps that take the server from `loaded` to `spec.model.adapters`."""
        before = {a.name: a for a in previous.model.adapters} if previous else {}
        desired = {a.name: a for a in spec.model.adapters}
        steps: list[_Step] = []
        for name, adapter in desired.items():
            path = adapter_path(adapter)
            if name not in loaded:
                steps.append(_Step("load", name, path))
            elif loaded[name] != path or (name in before and before[name] != adapter):
                steps.append(_Step("reload", name, path, loaded[name]))
        owned = self.owned(spec.name) | set(before)
        for name, path in sorted(loaded.items()):
            if name not in desired and (self.options.prune == "all" or name in owned):
                steps.append(_Step("unload", name, path, path))
        return steps

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        loaded = await self.loaded()
        steps = self.plan(spec, previous, loaded)
        done: list[_Step] = []
        try:
            for step in steps:
                if step.action == "load":
                    await self._load(step.name, step.path)
                elif step.action == "reload":
                    await self._reload(step.name, step.path)
                else:
                    await self._unload(step.name)
                done.append(step)
            now = await self.loaded()
            wrong = [a.name for a in spec.model.adapters if now.get(a.name) != adapter_path(a)]
            if wrong:
                raise TargetError(f"after apply the server does not list adapters: {wrong}")
        except BaseException:
            await self._undo(done)
            raise
        await asyncio.to_thread(self._set_owned, spec.name, {a.name for a in spec.model.adapters})
        if steps:
            log.info("%s: adapters %s", spec.name,
                     ", ".join(f"{s.action} {s.name}" for s in steps), extra={"model": spec.name})

    async def _undo(self, done: list[_Step]) -> None:
        for step in reversed(done):
            try:
                if step.action == "load":
                    await self._unload(step.name)
                elif step.undo_path is not None:
                    await (self._reload(step.name, step.undo_path) if step.action == "reload"
                           else self._load(step.name, step.undo_path))
            except TargetError as exc:
                log.error("undoing %s %s failed: %s", step.action, step.name, exc.reason)

    async def remove(self, name: str) -> None:
        """Unload every adapter this target loaded for model `name`."""
        for adapter in sorted(self.owned(name)):
            await self._unload(adapter)
        await asyncio.to_thread(self._set_owned, name, set())

    async def aclose(self) -> None:
        await self._client.aclose()


def _api_error(what: str, resp: httpx.Response) -> TargetError:
    message = error_text(resp)
    hint = ""
    if resp.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        hint = " (is the server started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)"
    return TargetError(f"{what}: status {resp.status_code}: {message}{hint}")
