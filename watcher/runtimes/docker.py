"""The `docker` runtime: containers through the Engine API, started blue/green beside the
serving one (traffic moves through the router, routers/nginx.py, see core/promotion.py).

    prepare    pull the image (X-Registry-Auth), pin it to the digest that was pulled
    start      create + start the new container beside the old one, on another loopback port,
               with the old one's host settings plus the spec's runtime section, labelled
               model-watcher.model / .revision / .role (blue|green) / .port / .image
    stop       stop + remove; idempotent
    instances  the model's running containers, found by label, newest first

Pulling and pinning live in docker_pull.py: a rollback re-runs the digest that ran before
even if the tag has moved since; what a container is (labels, create body, "started") in
docker_containers.py. Works with Docker and with Podman's compatible socket, both tested
(see engine.py and docs/containers.md for the differences absorbed).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.observability.logs import register_secret
from watcher.plugins import PluginContext, parse_options
from watcher.runtimes import docker_containers as dc
from watcher.runtimes import engine as eng
from watcher.runtimes.base import Instance
from watcher.runtimes.docker_pull import Puller

log = logging.getLogger("watcher.runtimes.docker")

#: Starts tried when the chosen host port is taken by another process in the meantime.
PORT_ATTEMPTS = 3


class PortTaken(eng.EngineError):
    """The engine could not bind the host port: another process took it after our check."""


class AuthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str
    password: SecretStr
    serveraddress: str = ""


class DockerOptions(BaseModel):
    """`runtime` settings for kind = "docker"."""

    model_config = ConfigDict(extra="forbid")

    socket: Path = Path("/var/run/docker.sock")
    api_version: str = eng.API_VERSION
    registry_auth: AuthOptions | None = None
    name_prefix: str = Field("mw-", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    host: str = "127.0.0.1"
    ports: tuple[int, int] = Field((18000, 18999), description="host port range, inclusive")
    container_port: int = Field(8080, ge=1, le=65535)
    env: dict[str, str] = Field(default_factory=dict, description="first container's env")
    binds: list[str] = Field(default_factory=list, description="first container's volumes")
    stop_timeout: int = Field(10, ge=0)
    restart_policy: Literal["unless-stopped", "always", "on-failure", "no"] = Field(
        "unless-stopped", description="the engine restarts a crashed container, and after its "
        "own restart (dockerd's shutdown stops every container)")
    pull_timeout: float = Field(300.0, gt=0)
    start_timeout: float = Field(15.0, gt=0)
    start_settle: float = Field(0.5, ge=0, description="running this long without a crash "
                                "counts as started")
    require_digest: bool = True

    @model_validator(mode="after")
    def _range(self) -> DockerOptions:
        lo, hi = self.ports
        if not 0 < lo < hi <= 65535:
            raise ValueError("ports must be [low, high] with 0 < low < high <= 65535")
        return self


class DockerRuntime:
    def __init__(self, opts: DockerOptions, ctx: PluginContext) -> None:
        self.opts = opts
        self.ctx = ctx
        self.engine = eng.EngineClient(opts.socket, api_version=opts.api_version)
        self._auth = (
            eng.RegistryAuth(a.username, a.password, a.serveraddress)
            if (a := opts.registry_auth) else None
        )
        if self._auth is not None:
            register_secret(self._auth.password.get_secret_value())  # masked in every log line
        self.puller = Puller(self.engine, self._auth, ctx.state_dir, ctx.environment,
                             timeout=opts.pull_timeout, require_digest=opts.require_digest)

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> DockerRuntime:
        return cls(parse_options(DockerOptions, options, "runtime"), ctx)

    async def aclose(self) -> None:
        await self.engine.aclose()

    # -- prepare ---------------------------------------------------------------
    async def prepare(self, spec: ModelSpec) -> None:
        """Pull the image and pin the digest (see docker_pull); touches nothing running."""
        await self.puller.prepare(spec)

    def pinned(self, spec: ModelSpec) -> str | None:
        """The digest reference `spec` runs as, once prepared."""
        return self.puller.pinned(spec)

    @property
    def on_progress(self) -> eng.ProgressCallback | None:
        """Also told about pull progress (the `pull` command's progress bar)."""
        return self.puller.on_progress

    @on_progress.setter
    def on_progress(self, callback: eng.ProgressCallback | None) -> None:
        self.puller.on_progress = callback

    # -- start -----------------------------------------------------------------
    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        """Create and start a container for `spec` beside the serving one."""
        ref = self.puller.pinned(spec) or await self.puller.prepare(spec)
        try:
            return await self._start(spec, revision, ref)
        except eng.EngineError as exc:
            raise RuntimeStartError(f"{spec.name}: starting a container failed: {exc}") from exc

    async def _start(self, spec: ModelSpec, revision: str, ref: str) -> Instance:
        running = await self._containers(spec.name)
        old = running[0] if running else None
        for stale in running[1:]:
            log.warning("%s: removing stale container %s (%s)", spec.name, stale.name,
                        stale.revision, extra={"model": spec.name})
            await self.stop(stale)
        await self._remove_exited(spec.name)
        role = "green" if old is not None and old.role == "blue" else "blue"
        name = f"{self.opts.name_prefix}{spec.name}-{role}"
        async for attempt in AsyncRetrying(stop=stop_after_attempt(PORT_ATTEMPTS), reraise=True,
                                           retry=retry_if_exception_type(PortTaken)):
            with attempt:
                inst = await self._create_start(spec, revision, ref, name, role, old)
        log.info("%s: started %s (%s) on %s", spec.name, name, ref, inst.address,
                 extra={"model": spec.name, "revision": revision})
        return inst

    async def _create_start(self, spec: ModelSpec, revision: str, ref: str, name: str, role: str,
                            old: Instance | None) -> dc.Container:
        """One container on a free host port; PortTaken when another process bound that port
        between the check and the engine's start (the container is removed first)."""
        port = await self._free_port()
        base: dc.Settings = (await dc.settings_of(self.engine, old.id) if old is not None
                             else (dict(self.opts.env), {"Binds": list(self.opts.binds)}, {}))
        config = dc.create_config(spec, revision, ref, role=role, host=self.opts.host, port=port,
                                  container_port=self.opts.container_port,
                                  restart_policy=self.opts.restart_policy, base=base)
        try:
            cid = await self.engine.create(name, config)
        except eng.NameConflict:
            await self._clear_name(name, spec.name)
            cid = await self.engine.create(name, config)
        inst = dc.instance(spec.name, cid, config["Labels"], self.opts.host, name=name)
        try:
            await self.engine.start(cid)
        except eng.EngineError as exc:
            await self.stop(inst)
            if not dc.bindable(self.opts.host, port):
                log.warning("%s: host port %d was taken before %s could bind it; trying another",
                            spec.name, port, name, extra={"model": spec.name})
                raise PortTaken(str(exc), exc.status) from exc
            raise
        try:
            await dc.wait_started(self.engine, inst, within=self.opts.start_timeout,
                                  settle=self.opts.start_settle)
        except (eng.EngineError, RuntimeStartError):
            await self.stop(inst)
            raise
        return inst

    async def _free_port(self) -> int:
        used = {i.port for i in await self._all_ours() if i.port}
        lo, hi = self.opts.ports
        for port in range(lo, hi + 1):
            if port not in used and dc.bindable(self.opts.host, port):
                return port
        raise RuntimeStartError(f"no free host port in {lo}-{hi}")

    async def _clear_name(self, name: str, model: str) -> None:
        """A container already holds `name`: remove it when it is ours and not serving."""
        with contextlib.suppress(eng.NotFound):
            info = await self.engine.inspect(name)
            labels = (info.get("Config") or {}).get("Labels") or {}
            if labels.get(dc.MODEL) != model:
                raise RuntimeStartError(f"container name {name} is taken by a container that "
                                        "model-watcher did not create")
            await self.engine.remove(info["Id"])

    async def _remove_exited(self, model: str) -> None:
        for c in await self.engine.list({dc.MODEL: model}, all=True):
            if c.get("State") not in ("running", "created", "configured"):
                await self.engine.remove(c["Id"])

    # -- stop ------------------------------------------------------------------
    async def stop(self, instance: Instance) -> None:
        """Stop and remove; idempotent."""
        try:
            await self._stop_remove(instance)
        except eng.EngineError as exc:
            raise RuntimeStartError(
                f"{instance.model}: removing {instance.name or instance.id[:12]}: {exc}") from exc

    async def _stop_remove(self, inst: Instance) -> None:
        with contextlib.suppress(eng.NotFound):
            await self.engine.stop(inst.id, self.opts.stop_timeout)
        await self.engine.remove(inst.id)

    # -- discovery -------------------------------------------------------------
    async def instances(self, model: str) -> list[Instance]:
        """Running containers of `model`, newest first (found by label after a restart)."""
        return list(await self._containers(model))

    async def _containers(self, model: str) -> list[dc.Container]:
        found = [dc.instance(model, c["Id"], c.get("Labels") or {}, self.opts.host,
                             name=(c.get("Names") or [""])[0].lstrip("/"),
                             created=int(c.get("Created") or 0))
                 for c in await self.engine.list({dc.MODEL: model}, all=False)]
        found.sort(key=lambda i: -i.created)
        return found

    async def _all_ours(self) -> list[dc.Container]:
        return [dc.instance(c["Labels"].get(dc.MODEL, ""), c["Id"], c.get("Labels") or {},
                            self.opts.host)
                for c in await self.engine.list({}, all=True) if dc.MODEL in (c.get("Labels") or {})]
