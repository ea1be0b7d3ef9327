"""Helpers the command modules share: settings with CLI overrides, logging, async running."""

from __future__ import annotations

import argparse
from typing import Any

from watcher.settings import Settings, load_settings


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "log_level", None):
        overrides["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        overrides["log_format"] = args.log_format
    if getattr(args, "environment", None):
        overrides["environment"] = args.environment
    return load_settings(getattr(args, "config", None), **overrides)
