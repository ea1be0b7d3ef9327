"""Lazy registry of plug-ins, chosen by name from the settings.

A kind maps to a "module:Class" string (uvicorn's shape), so an optional SDK (Nacos, etcd,
OpenTelemetry) is imported only when its plug-in is chosen. Every plug-in class offers
`create(options, ctx)`: it validates its own options (a pydantic model with extra="forbid")
and raises SettingsError naming the offending field.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

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
GROUPS: dict[str, dict[str, str]] = {"source": SOURCES, "target": TARGETS, "runtime": RUNTIMES}


@dataclass(frozen=True)
class PluginContext:
    """What every plug-in may rely on besides its own options."""

    state_dir: Path
    environment: str
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("watcher"))


def load_class(group: str, kind: str) -> type[Any]:
    """Import the class registered for `kind` in `group`; PluginError when unknown/absent."""
    table = GROUPS[group]
    if kind not in table:
        raise PluginError(f"{group}.kind: unknown kind {kind!r} (known: {', '.join(sorted(table))})")
    module_name, _, attr = table[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"{group}.kind={kind!r} needs an optional dependency that is not installed "
            f"({exc.name}); install model-watcher[{kind}]"
        ) from exc
    cls: type[Any] = getattr(module, attr)
    return cls


def create(group: str, options: Mapping[str, Any], ctx: PluginContext) -> Any:
    """Build the plug-in named by options['kind'] from the rest of `options`."""
    opts = dict(options)
    kind = str(opts.pop("kind", ""))
    cls = load_class(group, kind)
    return cls.create(opts, ctx)


M = TypeVar("M", bound=BaseModel)


def parse_options(model: type[M], options: Mapping[str, Any], prefix: str) -> M:
    """Validate a plug-in's options; errors name the settings path, e.g. `source.endpoints`."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, prefix)) from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: `path: message`, without pydantic's URLs and input dumps."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "document")
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)
