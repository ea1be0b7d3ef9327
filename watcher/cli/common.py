"""Helpers the command modules share: settings with CLI overrides, logging, async running."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from watcher import plugins
from watcher.settings import Settings, load_settings

T = TypeVar("T")


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    if getattr(args, "environment", None):
        overrides["environment"] = args.environment
    return load_settings(getattr(args, "config", None), **overrides)


def source_plugin(settings: Settings, kind: str | None, protocol: type[T]) -> T:
    """The settings' source (or, with `kind` naming another one, that kind with its default
    options), checked against `protocol` (Source, Publisher). Call it on the event loop."""
    options: dict[str, Any] = settings.source.options()
    if kind and kind != options["kind"]:
        options = {"kind": kind}
    ctx = plugins.PluginContext(state_dir=settings.state_dir, environment=settings.environment)
    plugin = plugins.create("source", options, ctx)
    if not isinstance(plugin, protocol):
        raise plugins.contract_error("source", plugin, protocol)
    return plugin
