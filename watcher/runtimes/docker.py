"""The `docker` runtime: containers through the Engine API, replaced blue/green behind nginx.

    prepare  pull the image (X-Registry-Auth), pin it to the digest that was pulled
    start    create + start the new container beside the old one, on another loopback port,
             with the old one's host settings plus the spec's runtime section, labelled
             model-watcher.model / .revision / .role (blue|green) / .port / .image
    promote  nginx weights along the step plan, `check(new)` at every step; abort -> 100 %
             back on the old one and HealthGateError; then drain, stop and remove the old one
    discard  move its traffic (if any) to a sibling first, then stop + remove; idempotent

Pulling and pinning live in docker_pull.py: a rollback re-runs the digest that ran before
even if the tag has moved since. Works with Docker and with Podman's compatible socket
(see engine.py for the differences it absorbs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.observability.logs import register_secret
from watcher.plugins import PluginContext, parse_options
from watcher.routers.nginx import NginxOptions, NginxUpstream, StepPlan, switch
from watcher.runtimes import engine as eng
from watcher.runtimes.base import Instance, StepCheck
from watcher.runtimes.docker_pull import Puller

log = logging.getLogger("watcher.runtimes.docker")

LABEL = "model-watcher"
MODEL, REVISION, ROLE, PORT, IMAGE, VERSION = (
    f"{LABEL}.{k}" for k in ("model", "revision", "role", "port", "image", "version")
)
#: Host settings a new container inherits from the one it replaces.
INHERITED_HOST_CONFIG = ("Binds", "Memory", "NanoCpus", "CpuShares", "ShmSize", "ExtraHosts",
                         "CapAdd", "CapDrop", "Devices", "Init")


class AuthOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str
    password: SecretStr
    serveraddress: str = ""


class DockerOptions(StepPlan):
    """`runtime` settings for kind = "docker"; the step-plan fields come from StepPlan."""

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
    nginx: NginxOptions

    @model_validator(mode="after")
    def _range(self) -> DockerOptions:
        lo, hi = self.ports
        if not 0 < lo < hi <= 65535:
            raise ValueError("ports must be [low, high] with 0 < low < high <= 65535")
        return self

    @property
    def plan(self) -> StepPlan:
        return StepPlan.model_validate(self.model_dump(include=set(StepPlan.model_fields)))


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

    def upstream(self, model: str) -> NginxUpstream:
        """The nginx upstream of `model` ({model} in the nginx paths/name is replaced)."""
        n = self.opts.nginx
        fill = {k: str(v).replace("{model}", model) for k, v in n.model_dump().items()
                if k in ("upstream_file", "upstream", "access_log") and v is not None}
        return NginxUpstream(n.model_copy(update={
            k: (v if k == "upstream" else Path(v)) for k, v in fill.items()}))

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
        running = await self.instances(spec.name)
        old = running[0] if running else None
        for stale in running[1:]:
            log.warning("%s: removing stale container %s (%s)", spec.name, stale.info["name"],
                        stale.revision, extra={"model": spec.name})
            await self.discard(stale)
        await self._remove_exited(spec.name)
        role = "green" if old is not None and old.info.get("role") == "blue" else "blue"
        port = await self._free_port()
        config = await self._config(spec, revision, ref, role, port, old)
        name = f"{self.opts.name_prefix}{spec.name}-{role}"
        try:
            cid = await self.engine.create(name, config)
        except eng.NameConflict:
            await self._clear_name(name, spec.name)
            cid = await self.engine.create(name, config)
        inst = _instance(spec.name, cid, config["Labels"], self.opts.host, name=name, running=True)
        try:
            await self.engine.start(cid)
            await self._wait_running(inst)
        except (eng.EngineError, RuntimeStartError):
            await self.discard(inst)
            raise
        log.info("%s: started %s (%s) on %s:%d", spec.name, name, ref, self.opts.host, port,
                 extra={"model": spec.name, "revision": revision})
        return inst

    async def _config(self, spec: ModelSpec, revision: str, ref: str, role: str, port: int,
                      old: Instance | None) -> dict[str, Any]:
        env = dict(self.opts.env)
        host_config: dict[str, Any] = {"Binds": list(self.opts.binds)}
        labels: dict[str, str] = {}
        if old is not None:
            env, host_config, labels = await self._settings_of(old)
        env.update(spec.runtime.env)
        labels.update(spec.runtime.labels)
        labels.update({MODEL: spec.name, REVISION: revision, ROLE: role, PORT: str(port),
                       IMAGE: ref, VERSION: spec.version})
        cport = f"{self.opts.container_port}/tcp"
        host_config["PortBindings"] = {cport: [{"HostIp": self.opts.host, "HostPort": str(port)}]}
        host_config["RestartPolicy"] = {"Name": self.opts.restart_policy}
        return {
            "Image": ref,
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Cmd": list(spec.runtime.args) or None,
            "Labels": labels,
            "ExposedPorts": {cport: {}},
            "HostConfig": host_config,
        }

    async def _settings_of(
        self, old: Instance
    ) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
        """The old container's own env, labels and host settings (not its image's defaults)."""
        info = await self.engine.inspect(old.id)
        cfg = info.get("Config") or {}
        try:
            image_cfg = (await self.engine.image_inspect(info["Image"])).get("Config") or {}
        except eng.NotFound:
            image_cfg = {}
        image_env = set(image_cfg.get("Env") or [])
        env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [] if e not in image_env)
        image_labels = image_cfg.get("Labels") or {}
        labels = {k: v for k, v in (cfg.get("Labels") or {}).items()
                  if not k.startswith(LABEL + ".") and image_labels.get(k) != v}
        host = info.get("HostConfig") or {}
        host_config = {k: host[k] for k in INHERITED_HOST_CONFIG
                       if host.get(k) not in (None, [], "", 0)}
        return env, host_config, labels

    async def _free_port(self) -> int:
        used = {int(i.info["port"]) for i in await self._all_ours() if i.info.get("port")}
        lo, hi = self.opts.ports
        for port in range(lo, hi + 1):
            if port not in used and _bindable(self.opts.host, port):
                return port
        raise RuntimeStartError(f"no free host port in {lo}-{hi}")

    async def _wait_running(self, inst: Instance) -> None:
        """Until the container has run for `start_settle` seconds without a crash;
        RuntimeStartError (with its last log lines) when it exited or crashed. With a restart
        policy the engine starts a crashed container again, so one poll seeing "running" proves
        little: Docker reports "restarting", then "running" again with a RestartCount."""
        deadline = time.monotonic() + self.opts.start_timeout
        running_since: float | None = None
        while True:
            info = await self.engine.inspect(inst.id)
            state = info.get("State") or {}
            now = time.monotonic()
            crashed = state.get("Restarting") or int(info.get("RestartCount") or 0) > 0
            if state.get("Running") and not crashed:
                running_since = running_since or now
                if now - running_since >= self.opts.start_settle:
                    return
            elif crashed or state.get("Status") in ("exited", "dead", "stopped") or now > deadline:
                logs = await self.engine.logs(inst.id)
                raise RuntimeStartError(
                    f"{inst.model}: container {inst.info['name']} is {state.get('Status')!r} "
                    f"(exit code {state.get('ExitCode')}): {logs.strip()[-300:]}")
            await asyncio.sleep(0.05)

    async def _clear_name(self, name: str, model: str) -> None:
        """A container already holds `name`: remove it when it is ours and not serving."""
        with contextlib.suppress(eng.NotFound):
            info = await self.engine.inspect(name)
            labels = (info.get("Config") or {}).get("Labels") or {}
            if labels.get(MODEL) != model:
                raise RuntimeStartError(f"container name {name} is taken by a container that "
                                        "model-watcher did not create")
            await self.engine.remove(info["Id"])

    async def _remove_exited(self, model: str) -> None:
        for c in await self.engine.list({MODEL: model}, all=True):
            if c.get("State") not in ("running", "created", "configured"):
                await self.engine.remove(c["Id"])

    # -- promote / discard -------------------------------------------------------
    async def promote(self, new: Instance, old: Instance | None, check: StepCheck) -> None:
        """Traffic along the step plan (abort: HealthGateError, old keeps 100 %); then stop old."""
        up = self.upstream(new.model)
        new_addr = new.info["addr"]
        old_addr = old.info["addr"] if old is not None else None

        async def probe() -> str | None:
            return await check(new)

        await switch(up, new_addr, old_addr, self.opts.plan, probe)
        if old is not None and old.id != new.id:
            await self._stop_remove(old)
        log.info("%s: %s serves 100%%", new.model, new.info.get("name"),
                 extra={"model": new.model, "revision": new.revision})

    async def discard(self, instance: Instance) -> None:
        """Stop and remove; a sibling takes over any traffic it still had. Idempotent."""
        addr = instance.info.get("addr")
        if addr:
            up = self.upstream(instance.model)
            weights = up.weights()
            if weights.get(addr, 0) > 0:
                others = [i for i in await self.instances(instance.model) if i.id != instance.id]
                if others:
                    await up.apply({others[0].info["addr"]: 100})
        try:
            await self._stop_remove(instance)
        except eng.EngineError as exc:
            raise RuntimeStartError(
                f"{instance.model}: removing {instance.id[:12]}: {exc}") from exc

    async def _stop_remove(self, inst: Instance) -> None:
        with contextlib.suppress(eng.NotFound):
            await self.engine.stop(inst.id, self.opts.stop_timeout)
        await self.engine.remove(inst.id)

    # -- discovery -------------------------------------------------------------
    async def instances(self, model: str) -> list[Instance]:
        """Running containers of `model`, the one with the most nginx traffic first."""
        weights = self.upstream(model).weights()
        found = [_instance(model, c["Id"], c.get("Labels") or {}, self.opts.host,
                           name=(c.get("Names") or [""])[0].lstrip("/"), running=True,
                           weight=weights, created=int(c.get("Created") or 0))
                 for c in await self.engine.list({MODEL: model}, all=False)]
        found.sort(key=lambda i: (-int(i.info["weight"]), -int(i.info.get("created", 0))))
        return found

    async def _all_ours(self) -> list[Instance]:
        return [_instance(c["Labels"].get(MODEL, ""), c["Id"], c.get("Labels") or {},
                          self.opts.host, running=c.get("State") == "running")
                for c in await self.engine.list({}, all=True) if MODEL in (c.get("Labels") or {})]


def _instance(model: str, cid: str, labels: Mapping[str, str], host: str, *, name: str = "",
              running: bool, weight: Mapping[str, int] | None = None,
              created: int = 0) -> Instance:
    port = labels.get(PORT, "")
    addr = f"{host}:{port}" if port else ""
    return Instance(
        id=cid, model=model, revision=labels.get(REVISION, ""),
        health_url=f"http://{addr}" if addr else None,
        info={"name": name, "role": labels.get(ROLE, ""), "port": port, "addr": addr,
              "image": labels.get(IMAGE, ""), "version": labels.get(VERSION, ""),
              "running": running, "weight": (weight or {}).get(addr, 0), "created": created},
    )


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
