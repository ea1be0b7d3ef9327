"""`llama-server` target: swap GGUF weights and LoRA adapters into llama.cpp's server in
router mode with zero failed chat requests, through a pair of routers behind nginx.

Clients call nginx with `"model": "<document name>"`; in both routers that is the name of
the model's preset section, so the name never changes. Two llama-server routers (`routers`,
each `--models-preset` with a preset file this target writes) take turns: nginx sends all
traffic to the *active* one (the upstream weights file says which); the other is *standby*,
a router process with nothing loaded. Why two: in the pinned version a router cannot give a
running instance new files or a name that another instance holds, and stopping an instance
with requests in flight stalls for `stop-timeout` and fails them (docs/llama.md, measured).
So a change of `model.*` is:

1. stage    copy the weights and adapters into `MODELS_DIR/<model>/` under new file names,
            hashing the copy against the document's sha256;
2. standby  write the standby's preset (every served model, this one with its new files),
            re-read it, load every entry, wait for `loaded`; a real completion from the new
            files must return tokens. Any failure: the standby unloads again; nginx and the
            active router were never touched, so the old model keeps serving;
3. switch   point nginx at the standby; `NginxUpstream.apply` returns once the previous nginx
            workers have exited, i.e. every request the old router was given has finished;
4. retire   the old router is now idle: its preset catches up and its instances unload cleanly
            (nothing in flight); it is the standby of the next swap.

`remove` drops the model's section from both presets (the active router unloads it).
Runtime changes (context size, threads, image) are the runtime's job (restart fallback).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from watcher.core.errors import ApplyError, SettingsError, TargetError
from watcher.core.spec import ModelSpec
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options
from watcher.routers.nginx import NginxOptions, NginxUpstream
from watcher.targets.llama_api import RouterClient
from watcher.targets.llama_preset import (
    SAFE_PATH,
    AdapterFile,
    Generation,
    Ledger,
    adapter_scales,
    render,
    source_file,
    stage_file,
)

log = logging.getLogger("watcher.targets.llama")


def _safe_path(v: Path) -> Path:
    if not SAFE_PATH.fullmatch(str(v)):
        raise ValueError("must be an absolute path of [A-Za-z0-9/._-] (it goes into the preset)")
    return v


class RouterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^http://[A-Za-z0-9.-]+:[0-9]{1,5}/?$",
                     description="the router's base URL, host:port as nginx's upstream names it")
    preset: Path = Field(description="its --models-preset file; this target writes it whole")

    _safe = field_validator("preset")(_safe_path)


class LlamaServerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    routers: list[RouterOptions] = Field(min_length=2, max_length=2,
                                         description="the two routers that take turns")
    nginx: NginxOptions = Field(description="the upstream clients reach the routers through")
    models_dir: Path = Field(description="where weights and adapters are staged, one "
                                         "directory per model")
    load_timeout: float = Field(300.0, gt=0, description="seconds all models may take to load")
    request_timeout: float = Field(30.0, gt=0, description="seconds for one API call")
    poll_interval: float = Field(0.1, gt=0)
    retries: int = Field(3, ge=1, description="attempts on connection-level failures")
    check_prompt: str = Field("Hello", min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$",
                              description="the test completion's prompt")
    check_tokens: int = Field(4, ge=1, le=64, description="tokens the test completion asks for")
    load_on_startup: bool = Field(True, description="served models load when a router starts")
    stop_timeout: int | None = Field(None, ge=0, le=600,
                                     description="seconds an unloaded instance may take to exit")
    token: SecretStr | None = Field(None, description="llama-server --api-key, sent as Bearer")
    hot_paths: tuple[str, ...] = ("model.",)

    _safe = field_validator("models_dir")(_safe_path)

    @model_validator(mode="after")
    def _distinct(self) -> LlamaServerOptions:
        a, b = self.routers
        if a.url.rstrip("/") == b.url.rstrip("/") or a.preset == b.preset:
            raise ValueError("routers: the two need their own url and their own preset")
        if "{" in self.nginx.upstream or "{" in str(self.nginx.upstream_file):
            raise ValueError("nginx: one upstream serves every model here: no {model} in it")
        return self


@dataclass
class Router:
    addr: str
    preset: Path
    api: RouterClient


class LlamaServerTarget:
    def __init__(self, options: LlamaServerOptions, state_dir: Path) -> None:
        self.options = options
        self.hot_paths = options.hot_paths
        self.routers = [
            Router(urlsplit(r.url).netloc, r.preset,
                   RouterClient(r.url, token=options.token, timeout=options.request_timeout,
                                retries=options.retries))
            for r in options.routers
        ]
        self.upstream = NginxUpstream(options.nginx)
        self.ledger = Ledger(state_dir)
        #: One swap at a time: every swap loads all served models on the standby.
        self._lock = asyncio.Lock()

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> LlamaServerTarget:
        opts = parse_options(LlamaServerOptions, options, "target")
        if not opts.models_dir.is_dir():
            raise SettingsError(f"target.models_dir: {opts.models_dir} is not a directory")
        for i, r in enumerate(opts.routers):
            if not r.preset.parent.is_dir():
                raise SettingsError(f"target.routers.{i}.preset: {r.preset.parent} is not a directory")
        return cls(opts, ctx.state_dir)

    def active(self) -> Router | None:
        """The router nginx sends traffic to (None before the first swap)."""
        weights = self.upstream.weights()
        live = [r for r in self.routers if weights.get(r.addr, 0) > 0]
        return max(live, key=lambda r: weights[r.addr]) if live else None

    # -- steps ------------------------------------------------------------------------
    async def _stage(self, spec: ModelSpec) -> Generation:
        scales = adapter_scales(spec)
        model_dir = self.options.models_dir / spec.name
        weights = source_file(spec.model.uri, "model.uri")
        staged = await asyncio.to_thread(stage_file, weights, model_dir, "model", spec.model.sha256)
        adapters = []
        for a in spec.model.adapters:
            src = source_file(a.uri, f"adapter {a.name}")
            path = await asyncio.to_thread(stage_file, src, model_dir, f"lora-{a.name}", a.sha256)
            adapters.append(AdapterFile(a.name, str(path), scales[a.name]))
        return Generation(str(staged), tuple(adapters))

    async def _write(self, router: Router, served: Mapping[str, Generation], serving: bool) -> None:
        """Write `router`'s preset and have it re-read it. Only the router that serves loads
        its models when it (re)starts: a standby restarted by a reboot stays empty."""
        text = render(served, load_on_startup=serving and self.options.load_on_startup,
                      stop_timeout=self.options.stop_timeout)
        try:
            await asyncio.to_thread(write_atomically, router.preset, text.encode())
        except OSError as exc:
            raise TargetError(f"cannot write {router.preset}: {exc.strerror}") from exc
        await router.api.models(reload=True)

    async def _load_all(self, router: Router, served: Mapping[str, Generation],
                        check: str | None) -> None:
        """Every served model loaded on `router`; `check` must answer a real completion."""
        room = await router.api.max_instances()
        if room and len(served) > room:
            raise TargetError(f"{len(served)} models to serve, but router {router.addr} runs "
                              f"with --models-max {room}")
        for name in sorted(served):
            await router.api.load(name)
        for name in sorted(served):
            await router.api.wait_loaded(name, self.options.load_timeout, self.options.poll_interval)
        if check is not None:
            tokens = await router.api.complete(check, self.options.check_prompt,
                                               self.options.check_tokens)
            log.info("%s: loaded on %s, test completion returned %d tokens", check,
                     router.addr, len(tokens), extra={"model": check})

    async def _retire(self, router: Router, served: Mapping[str, Generation]) -> None:
        """Bring an idle router's preset up to date and unload everything on it."""
        try:
            await self._write(router, served, serving=False)
            for name, entry in (await router.api.models()).items():
                if (entry.get("status") or {}).get("value") in ("loaded", "loading", "sleeping"):
                    await router.api.unload(name)
        except TargetError as exc:  # a standby that keeps memory is a warning, not a failure
            log.warning("could not unload the idle router %s: %s", router.addr, exc.reason)

    async def _swap(self, served: Mapping[str, Generation], check: str | None,
                    before: Mapping[str, Generation]) -> None:
        """Load `served` on the standby router, then move nginx to it (see module doc). On
        failure the standby is emptied and its preset says `before` again."""
        active = self.active()
        standby = next(r for r in self.routers if r is not active)
        try:
            await self._write(standby, served, serving=True)
            await self._load_all(standby, served, check)
        except TargetError:
            await self._retire(standby, before)
            raise
        try:
            await self.upstream.apply({standby.addr: 100})
        except ApplyError as exc:  # nginx refused or failed: it still points at the old router
            await self._retire(standby, before)
            raise TargetError(f"switching nginx to {standby.addr}: {exc.reason}") from exc
        log.info("nginx: all traffic on router %s%s", standby.addr,
                 f" (was {active.addr})" if active else "")
        if active is not None:
            await self._retire(active, served)

    # -- the Target contract ------------------------------------------------------------
    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        name = spec.name
        async with self._lock:
            new = await self._stage(spec)
            before = dict(self.ledger.served)
            old = before.get(name)
            active = self.active()
            if old == new and active is not None and await self._serves(active, name, new):
                await self._load_all(active, before, name)  # e.g. after a router restart
                return
            try:
                await self._swap({**before, name: new}, name, before)
            except TargetError:
                self._forget_files(name, self._kept(name))
                raise
            # recorded only now: a daemon killed before this line finds the old files in the
            # ledger and swaps again, which converges
            try:
                await asyncio.to_thread(self.ledger.set, name, new, old)
            except OSError as exc:
                raise TargetError(f"{name}: the new files serve, but recording that in the "
                                  f"state dir failed: {exc.strerror}") from exc
            self._forget_files(name, self._kept(name))
        log.info("%s: %s serves through nginx as %r", name, spec.version, name,
                 extra={"model": name})

    async def _serves(self, router: Router, name: str, gen: Generation) -> bool:
        """Whether `router`'s entry for `name` names exactly `gen`'s files (not only the ledger
        says so: the router's own view, `GET /models` status.preset)."""
        entry = (await router.api.models()).get(name)
        preset = str(((entry or {}).get("status") or {}).get("preset") or "")
        wanted = render({name: gen}, load_on_startup=False, stop_timeout=None).splitlines()
        lines = {line.strip() for line in preset.splitlines()}
        return all(line in lines for line in wanted if line.startswith(("model =", "lora-scaled =")))

    def _kept(self, name: str) -> set[str]:
        kept: set[str] = set()
        for gen in (self.ledger.served.get(name), self.ledger.previous.get(name)):
            kept |= gen.files() if gen else set()
        return kept

    def _forget_files(self, name: str, keep: set[str]) -> None:
        """Delete staged files of `name` that neither the served nor the previous files use."""
        model_dir = self.options.models_dir / name
        for path in model_dir.glob("*.gguf") if model_dir.is_dir() else ():
            if str(path) not in keep:
                path.unlink(missing_ok=True)
        if model_dir.is_dir() and not keep and not any(model_dir.iterdir()):
            model_dir.rmdir()

    async def remove(self, name: str) -> None:
        """Drop the model's section from both presets: the active router unloads it."""
        async with self._lock:
            if name not in self.ledger.served:
                return
            served = {k: v for k, v in self.ledger.served.items() if k != name}
            active = self.active()
            for router in sorted(self.routers, key=lambda r: r is not active):
                await self._write(router, served, serving=router is active)
            if active is not None:
                await active.api.wait_gone(name, self.options.load_timeout,
                                           self.options.poll_interval)
            try:
                await asyncio.to_thread(self.ledger.set, name, None, None)
            except OSError as exc:
                raise TargetError(f"cannot forget {name}: {exc.strerror}") from exc
            self._forget_files(name, set())
        log.info("%s: unloaded and forgotten by llama-server", name, extra={"model": name})

    async def aclose(self) -> None:
        for router in self.routers:
            await router.api.aclose()
