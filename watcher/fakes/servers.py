"""A fake model server behind the Target, Runtime and health-probe interfaces.

`FakeServer` is what the model server would serve: the spec loaded per model (hot swaps)
and its instances (restarts). `FakeTarget`, `FakeRuntime` and `FakeRouter` act on it the way
the real plug-ins act on a real server, and `ScriptedProber` answers health probes from a
script.
Failures are scripted per call (`fail` queues) so every branch of the executor can be driven.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.core.errors import WatcherError
from watcher.core.health import HealthCheck
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, parse_options
from watcher.routers.base import StepPlan
from watcher.runtimes.base import Instance


@dataclass
class FakeServer:
    """What serves now: `loaded` (hot swaps) and `instances` (restarts), plus a call log."""

    loaded: dict[str, ModelSpec] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    specs: dict[str, ModelSpec] = field(default_factory=dict)  # instance id -> its spec
    calls: list[str] = field(default_factory=list)


@dataclass
class FakeTarget:
    """Hot swaps `model.*` into a FakeServer. `fail` holds errors raised by the next calls
    (None lets a call through); `block` makes apply wait until it is set."""

    server: FakeServer = field(default_factory=FakeServer)
    hot_paths: tuple[str, ...] = ("model.",)
    fail: deque[BaseException | None] = field(default_factory=deque)
    block: asyncio.Event | None = None

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        self.server.calls.append(f"apply {spec.name} {spec.version}")
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            exc = self.fail.popleft()
            if exc is not None:
                raise exc
        self.server.loaded[spec.name] = spec

    async def remove(self, name: str) -> None:
        self.server.calls.append(f"remove {name}")
        if self.fail and (exc := self.fail.popleft()) is not None:
            raise exc
        self.server.loaded.pop(name, None)

    async def aclose(self) -> None:
        return None


@dataclass
class FakeRuntime:
    """Starts instances in a FakeServer: beside the old one (`in_place=False`: blue/green,
    each on an address of its own) or replacing it. `fail_start` holds errors for the next
    starts."""

    server: FakeServer = field(default_factory=FakeServer)
    in_place: bool = False
    fail_start: deque[WatcherError | None] = field(default_factory=deque)
    #: instances name a `fake://` health URL (for a ScriptedProber); off in a dry run
    probe_urls: bool = True
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> FakeRuntime:
        """`[runtime] kind = "watcher.fakes.servers:FakeRuntime"`: a dry run of restarts
        (`in_place = true` for the in-place kind); nothing is started for real."""
        return cls(in_place=bool(options.get("in_place", False)), probe_urls=False)

    async def prepare(self, spec: ModelSpec) -> None:
        self.server.calls.append(f"prepare {spec.name} {spec.version}")

    async def start(self, spec: ModelSpec, revision: str) -> Instance:
        self.server.calls.append(f"start {spec.name} {spec.version}")
        if self.fail_start and (exc := self.fail_start.popleft()) is not None:
            raise exc
        n = next(self._ids)
        if self.in_place:
            for old in [i for i in self.server.instances.values() if i.model == spec.name]:
                del self.server.instances[old.id]
        inst = Instance(f"{spec.name}-{n}", spec.name, revision,
                        address=None if self.in_place else f"127.0.0.1:{20000 + n}",
                        health_url=f"fake://{spec.name}/{spec.version}" if self.probe_urls else None,
                        name=f"{spec.name}-{n}")
        self.server.instances[inst.id] = inst
        self.server.specs[inst.id] = spec
        return inst

    async def stop(self, instance: Instance) -> None:
        self.server.calls.append(f"stop {instance.id}")
        self.server.instances.pop(instance.id, None)

    async def instances(self, model: str) -> list[Instance]:
        found = [i for i in self.server.instances.values() if i.model == model]
        return sorted(found, key=lambda i: -int(i.id.rsplit("-", 1)[1]))

    def serving(self, model: str) -> list[str]:
        """The versions of `model`'s running instances."""
        return [self.server.specs[i.id].version for i in self.server.instances.values()
                if i.model == model]

    async def aclose(self) -> None:
        return None


@dataclass
class FakeObservation:
    bad: dict[str, str]

    def verdict(self, address: str, plan: StepPlan) -> str | None:
        return self.bad.get(address)


@dataclass
class FakeRouter:
    """Weights per model, as a router would hold them; `history` is every route() call and
    `bad` makes the traffic verdict of an address fail (an error rate, say)."""

    plan: StepPlan = field(default_factory=lambda: StepPlan(steps=[10, 50, 100]))
    weights: dict[str, dict[str, int]] = field(default_factory=dict)
    history: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    block: asyncio.Event | None = None

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> FakeRouter:
        """`[router] kind = "watcher.fakes.servers:FakeRouter"` (step-plan options allowed)."""
        return cls(plan=parse_options(StepPlan, options, "router"))

    async def routes(self, model: str) -> dict[str, int]:
        return dict(self.weights.get(model, {}))

    async def route(self, model: str, weights: dict[str, int]) -> None:
        self.history.append((model, dict(weights)))
        self.weights[model] = dict(weights)
        if self.block is not None:
            await self.block.wait()

    def observe(self, model: str) -> FakeObservation:
        return FakeObservation(self.bad)

    async def aclose(self) -> None:
        return None


@dataclass
class ScriptedProber:
    """Health probes answered by rule: a URL containing a key of `unhealthy` fails with
    that reason; every other URL is healthy. Records every probed URL."""

    unhealthy: dict[str, str] = field(default_factory=dict)
    probed: list[str] = field(default_factory=list)

    async def __call__(self, url: str, check: HealthCheck) -> str | None:
        self.probed.append(url)
        return next((why for key, why in self.unhealthy.items() if key in url), None)

