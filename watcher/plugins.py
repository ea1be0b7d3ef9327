"""Lazy registry of plug-ins, chosen by name from the settings.

A kind maps to a "module:Class" string (uvicorn's shape), so an optional SDK (Nacos, etcd,
OpenTelemetry) is imported only when its plug-in is chosen. A kind may also BE such a string
(`kind = "mycompany.watcher_consul:ConsulSource"`): an out-of-tree plug-in needs no change
here. Every plug-in class offers `create(options, ctx)`: it validates its own options (a
pydantic model with extra="forbid") and raises SettingsError naming the offending field.
What it returns is checked against the group's protocol, so a plug-in that lacks a method
fails at start with its name, not at its first use.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from watcher.core.childenv import EnvPolicy
from watcher.core.errors import PluginError, SettingsError

SOURCES: dict[str, str] = {
    "localdir": "watcher.sources.localdir:LocalDirSource",
    "etcd": "watcher.sources.etcd:EtcdSource",
    "nacos": "watcher.sources.nacos:NacosSource",
}
TARGETS: dict[str, str] = {
    "http": "watcher.targets.http:HttpTarget",
    "signal": "watcher.targets.signal:SignalTarget",
    "v2-repository": "watcher.targets.v2repo:V2RepositoryTarget",
    "openai-lora": "watcher.targets.openai_lora:OpenAILoraTarget",
    "llama-server": "watcher.targets.llama:LlamaServerTarget",
}
RUNTIMES: dict[str, str] = {
    "command": "watcher.runtimes.command:CommandRuntime",
    "docker": "watcher.runtimes.docker:DockerRuntime",
    "systemd": "watcher.runtimes.systemd:SystemdRuntime",
}
ROUTERS: dict[str, str] = {
    "nginx": "watcher.routers.nginx:NginxRouter",
}
GROUPS: dict[str, dict[str, str]] = {"source": SOURCES, "target": TARGETS, "runtime": RUNTIMES,
                                     "router": ROUTERS}


@dataclass(frozen=True)
class PluginContext:
    """What every plug-in may rely on besides its own options."""

    state_dir: Path
    environment: str
    #: `[policy.env]`: what runtimes that start host processes let a document set
    env_policy: EnvPolicy = field(default_factory=EnvPolicy)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("watcher"))


def load_class(group: str, kind: str) -> type[Any]:
    """Import the class registered for `kind` in `group` (or named by `kind` itself as
    "module:Class"); PluginError when unknown or absent."""
    table = GROUPS[group]
    target = table.get(kind) or (kind if ":" in kind else None)
    if target is None:
        raise PluginError(f"{group}.kind: unknown kind {kind!r} (known: {', '.join(sorted(table))}"
                          ", or an importable \"module:Class\")")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"{group}.kind={kind!r} needs an optional dependency that is not installed "
            f"({exc.name}); install model-watcher[{kind}]"
        ) from exc
    cls: type[Any] | None = getattr(module, attr, None)
    if cls is None or not hasattr(cls, "create"):
        raise PluginError(f"{group}.kind={kind!r}: {module_name} has no plug-in class {attr!r} "
                          "with a create(options, ctx) classmethod")
    return cls


def create(group: str, options: Mapping[str, Any], ctx: PluginContext) -> object:
    """Build the plug-in named by options['kind'] from the rest of `options`. Callers check
    it against their protocol with `isinstance` and raise `contract_error` when it fails."""
    opts = dict(options)
    kind = str(opts.pop("kind", ""))
    plugin: object = load_class(group, kind).create(opts, ctx)
    return plugin


def contract_error(group: str, plugin: object, protocol: type[Any]) -> PluginError:
    """`plugin` lacks members of `protocol`: say which, at start, not at first use."""
    members = getattr(protocol, "__protocol_attrs__", None) or \
        {n for n in (*vars(protocol), *getattr(protocol, "__annotations__", {}))
         if not n.startswith("_")}
    missing = sorted(m for m in members if not hasattr(plugin, m))
    return PluginError(f"{group}: {type(plugin).__module__}.{type(plugin).__name__} does not "
                       f"implement the {protocol.__name__} contract (missing: "
                       f"{', '.join(missing) or '?'}); see docs/architecture.md")


M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], options: Mapping[str, Any], prefix: str) -> M:
    """Validate a plug-in's options; errors name the settings path, e.g. `source.endpoints`."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, prefix)) from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: `path: message`, without pydantic's URLs and input dumps. Keys
    from the document that are not printable are shown quoted (repr), so a reason stays one
    line whatever a document names its keys."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(_printable(str(p)) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "document")
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        parts.append(f"{path}: {_printable(msg)}")
    return "; ".join(parts)


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)
