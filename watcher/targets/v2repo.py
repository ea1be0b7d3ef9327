"""`v2-repository` target: hot swap through the Open Inference Protocol V2 repository API.

For servers with the model repository extension. The settings file written is MLServer's
(`model-settings.json`); Triton (explicit model-control mode) and KServe answer the same
load/unload/ready calls but read a `config.pbtxt` this target does not write. Steps of
`apply`, each one line of contract:

1. render   `model-settings.json` from `spec.model` (MLServer's layout, see `render`);
2. stage    write it into `REPOSITORY/<name>/` atomically (temp file in the same directory,
            fsync, rename), keeping the bytes it replaces;
3. load     `POST /v2/repository/models/<name>/load`; anything but 200 is a TargetError
            carrying the server's message;
4. ready    poll `GET /v2/models/<name>/ready` until 200 within `ready_timeout`.

The server loads the new model before it drops the old one, so a failed load leaves the
old one serving; the target then puts the previous `model-settings.json` back, so that the
repository keeps describing what is served (a server restart loads the same model).
`remove` unloads the model and deletes the settings file it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from watcher.core.errors import SettingsError, TargetError
from watcher.core.spec import ModelSpec
from watcher.core.verify import local_path
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.targets.base import unreachable

log = logging.getLogger("watcher.targets.v2repo")

SETTINGS_FILE = "model-settings.json"
#: `model.parameters` keys that MLServer reads at the top level of model-settings.json, and
#: those it reads under `parameters`; every other key goes to `parameters.extra`.
TOP_LEVEL_KEYS = frozenset({
    "platform", "versions", "inputs", "outputs", "parallel_workers", "warm_workers",
    "max_batch_size", "max_batch_time", "cache_enabled",
})
PARAMETER_KEYS = frozenset({
    "format", "content_type", "environment_path", "environment_tarball",
    "inference_pool_gid", "autogenerate_inference_pool_gid",
})


class V2RepositoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="the server's HTTP base URL, e.g. http://127.0.0.1:8080")
    repository: Path = Field(description="the server's model repository directory")
    ready_timeout: float = Field(60.0, gt=0, description="seconds for /ready after a load")
    load_timeout: float = Field(300.0, gt=0, description="seconds one load request may take")
    poll_interval: float = Field(0.2, gt=0)
    implementation: str | None = Field(
        None, description="default model.implementation, e.g. mlserver_sklearn.SKLearnModel"
    )
    token: SecretStr | None = Field(None, description="sent as `Authorization: Bearer ...`")
    hot_paths: tuple[str, ...] = ("model.",)


def render(spec: ModelSpec, default_implementation: str | None = None) -> dict[str, Any]:
    """MLServer's model-settings.json for `spec`.

    No `parameters.version` on purpose: MLServer swaps an unversioned model in place (load
    new, then drop old), whereas a new version becomes the default before it is ready.
    """
    model = spec.model
    implementation = model.implementation or default_implementation
    if not implementation:
        raise TargetError(
            f"{spec.name}: model.implementation is not set (nor target.implementation); "
            "the server needs it, e.g. mlserver_sklearn.SKLearnModel"
        )
    path = local_path(model.uri)
    parameters: dict[str, Any] = {"uri": str(path) if path is not None else model.uri}
    settings: dict[str, Any] = {"name": spec.name, "implementation": implementation}
    extra: dict[str, Any] = {}
    for key, value in model.parameters.items():
        if key in TOP_LEVEL_KEYS:
            settings[key] = value
        elif key in PARAMETER_KEYS:
            parameters[key] = value
        else:
            extra[key] = value
    if extra:
        parameters["extra"] = extra
    settings["parameters"] = parameters
    return settings


def admin_client(token: SecretStr | None, timeout: float) -> httpx.AsyncClient:
    """The HTTP client for a server's admin API; the token only ever leaves in the header."""
    headers = {"User-Agent": "model-watcher"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    return httpx.AsyncClient(headers=headers, timeout=timeout)


class V2RepositoryTarget:
    def __init__(self, options: V2RepositoryOptions) -> None:
        self.options = options
        self.hot_paths = options.hot_paths
        self.base = options.url.rstrip("/")
        self._client = admin_client(options.token, options.load_timeout)

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> V2RepositoryTarget:
        opts = parse_options(V2RepositoryOptions, options, "target")
        if not opts.repository.is_dir():
            raise SettingsError(f"target.repository: {opts.repository} is not a directory")
        return cls(opts)

    def settings_path(self, name: str) -> Path:
        return self.options.repository / name / SETTINGS_FILE

    async def _post(self, url: str, what: str) -> None:
        try:
            resp = await self._client.post(url)
        except httpx.HTTPError as exc:
            raise unreachable(f"{what} ({url})", exc, self.options.load_timeout) from exc
        if resp.status_code != 200:
            raise TargetError(f"{what}: status {resp.status_code}: {_message(resp)}")

    async def _wait_ready(self, name: str) -> None:
        url = f"{self.base}/v2/models/{name}/ready"
        deadline = time.monotonic() + self.options.ready_timeout
        last = "no answer yet"
        while True:
            try:
                resp = await self._client.get(url, timeout=self.options.poll_interval + 5)
                if resp.status_code == 200:
                    return
                last = f"status {resp.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"{name} not ready within {self.options.ready_timeout:g}s after load ({last})"
                )
            await asyncio.sleep(self.options.poll_interval)

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        """Stage, load, wait ready; on failure restore the previous settings file."""
        content = json.dumps(render(spec, self.options.implementation), indent=2).encode() + b"\n"
        path = self.settings_path(spec.name)
        try:
            before: bytes | None = path.read_bytes()
        except FileNotFoundError:
            before = None
        try:
            await asyncio.to_thread(write_atomically, path, content)
        except OSError as exc:
            raise TargetError(f"cannot write {path}: {exc.strerror}") from exc
        load_url = f"{self.base}/v2/repository/models/{spec.name}/load"
        try:
            await self._post(load_url, f"load {spec.name} {spec.version}")
        except BaseException:
            await asyncio.to_thread(self._restore, path, before)
            raise
        try:
            await self._wait_ready(spec.name)
        except TargetError:
            # Loaded but never ready: put the previous settings back and load them again.
            await asyncio.to_thread(self._restore, path, before)
            if before is not None:
                with contextlib.suppress(TargetError):
                    await self._post(load_url, f"reload previous {spec.name}")
            raise
        log.info("%s: %s loaded through %s", spec.name, spec.version, self.base,
                 extra={"model": spec.name})

    @staticmethod
    def _restore(path: Path, before: bytes | None) -> None:
        try:
            if before is None:
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            else:
                write_atomically(path, before)
        except OSError as exc:  # the load error is the one worth raising
            log.error("could not restore %s: %s", path, exc.strerror)

    async def remove(self, name: str) -> None:
        """Unload (a model the server does not know counts as unloaded), then forget it."""
        url = f"{self.base}/v2/repository/models/{name}/unload"
        try:
            await self._post(url, f"unload {name}")
        except TargetError as exc:
            if not await self._unknown(name):
                raise
            log.info("%s: not loaded on the server (%s)", name, exc.reason)
        await asyncio.to_thread(self._restore, self.settings_path(name), None)

    async def _unknown(self, name: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            resp = await self._client.get(f"{self.base}/v2/models/{name}/ready", timeout=5)
            return resp.status_code in (400, 404)
        return False

    async def aclose(self) -> None:
        await self._client.aclose()


def _message(resp: httpx.Response) -> str:
    """The server's own error text: V2 servers answer `{"error": "..."}`."""
    with contextlib.suppress(ValueError):
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return " ".join(body["error"].split())[:300]
    return " ".join(resp.text.split())[:300] or resp.reason_phrase
