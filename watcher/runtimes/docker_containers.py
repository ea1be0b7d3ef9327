"""What one container of the docker runtime is, on either engine (Docker or Podman).

    labels         model-watcher.model / .revision / .role / .port / .image / .version: the
                   runtime's whole memory of a container, so a restarted daemon finds it
    create_config  the Engine API create body: the old container's own settings (not its
                   image's defaults), then the spec's runtime section, a loopback port, labels
                   and the restart policy
    wait_started   running for `settle` seconds without a crash, or RuntimeStartError
    instance       the Container (an Instance) read back from a container's labels
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.runtimes import engine as eng
from watcher.runtimes.base import Instance

LABEL = "model-watcher"
MODEL, REVISION, ROLE, PORT, IMAGE, VERSION = (
    f"{LABEL}.{k}" for k in ("model", "revision", "role", "port", "image", "version")
)
#: Host settings a new container inherits from the one it replaces.
INHERITED_HOST_CONFIG = ("Binds", "Memory", "NanoCpus", "CpuShares", "ShmSize", "ExtraHosts",
                         "CapAdd", "CapDrop", "Devices", "Init")

Settings = tuple[dict[str, str], dict[str, Any], dict[str, str]]


@dataclass(frozen=True)
class Container(Instance):
    """An Instance plus what only the docker runtime needs: its role (blue/green names),
    host port and creation time."""

    role: str = ""
    port: int = 0
    created: int = 0


async def settings_of(engine: eng.EngineClient, cid: str) -> Settings:
    """A container's own env, host settings and labels (not its image's defaults)."""
    info = await engine.inspect(cid)
    cfg = info.get("Config") or {}
    try:
        image_cfg = (await engine.image_inspect(info["Image"])).get("Config") or {}
    except eng.NotFound:
        image_cfg = {}
    image_env = set(image_cfg.get("Env") or [])
    env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [] if e not in image_env)
    image_labels = image_cfg.get("Labels") or {}
    labels = {k: v for k, v in (cfg.get("Labels") or {}).items()
              if not k.startswith(LABEL + ".") and image_labels.get(k) != v}
    host = info.get("HostConfig") or {}
    host_config = {k: host[k] for k in INHERITED_HOST_CONFIG if host.get(k) not in (None, [], "", 0)}
    return env, host_config, labels


def create_config(spec: ModelSpec, revision: str, ref: str, *, role: str, host: str, port: int,
                  container_port: int, restart_policy: str, base: Settings) -> dict[str, Any]:
    """The create body: `base` (env, host settings, labels) + the spec + ours."""
    env, host_config, labels = dict(base[0]), dict(base[1]), dict(base[2])
    env.update(spec.runtime.env)
    labels.update(spec.runtime.labels)
    labels.update({MODEL: spec.name, REVISION: revision, ROLE: role, PORT: str(port),
                   IMAGE: ref, VERSION: spec.version})
    cport = f"{container_port}/tcp"
    host_config["PortBindings"] = {cport: [{"HostIp": host, "HostPort": str(port)}]}
    # dockerd's shutdown stops every container; only a policy starts it again afterwards
    host_config["RestartPolicy"] = {"Name": restart_policy}
    return {
        "Image": ref,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Cmd": list(spec.runtime.args) or None,
        "Labels": labels,
        "ExposedPorts": {cport: {}},
        "HostConfig": host_config,
    }


async def wait_started(engine: eng.EngineClient, inst: Container, *, within: float,
                       settle: float) -> None:
    """Until the container has run for `settle` seconds without a crash; RuntimeStartError
    (with its last log lines) when it exited or crashed, or after `within` seconds. With a
    restart policy the engine starts a crashed container again, so one poll seeing "running"
    proves little: Docker reports "restarting", then "running" with a RestartCount (Podman:
    "stopped" between restarts)."""
    deadline = time.monotonic() + within
    running_since: float | None = None
    while True:
        info = await engine.inspect(inst.id)
        state = info.get("State") or {}
        now = time.monotonic()
        crashed = state.get("Restarting") or int(info.get("RestartCount") or 0) > 0
        if state.get("Running") and not crashed:
            running_since = running_since or now
            if now - running_since >= settle:
                return
        elif crashed or state.get("Status") in ("exited", "dead", "stopped") or now > deadline:
            logs = await engine.logs(inst.id)
            raise RuntimeStartError(
                f"{inst.model}: container {inst.name} is {state.get('Status')!r} "
                f"(exit code {state.get('ExitCode')}): {logs.strip()[-300:]}")
        await asyncio.sleep(0.05)


def instance(model: str, cid: str, labels: Mapping[str, str], host: str, *, name: str = "",
             created: int = 0) -> Container:
    port = labels.get(PORT, "")
    addr = f"{host}:{port}" if port else None
    return Container(id=cid, model=model, revision=labels.get(REVISION, ""), address=addr,
                     health_url=f"http://{addr}" if addr else None,
                     artifact=labels.get(IMAGE) or None, name=name, role=labels.get(ROLE, ""),
                     port=int(port) if port.isdigit() else 0, created=created)


def bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
