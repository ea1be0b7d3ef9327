"""Command line: `model-watcher COMMAND` / `python -m watcher COMMAND`.

Each command lives in its own module under watcher/cli/ with `register(subparsers)`, which
adds its parser and sets `func(args) -> int` (the exit status). Errors of the daemon's own
hierarchy become one line on stderr and their exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from watcher import __version__
from watcher.core.errors import WatcherError

COMMANDS = (
    "run",
    "once",
    "status",
    "history",
    "rollback",
    "validate",
    "schema",
    "publish",
    "revision",
    "rollout",
    "pull",
    "push_weights",
    "keygen",
    "sign",
    "completion",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-watcher",
        description="Keep a model server in line with the configuration in a config center.",
    )
    parser.add_argument("--version", action="version", version=f"model-watcher {__version__}")
    parser.add_argument("--config", "-c", help="settings file (TOML); default "
                        "/etc/model-watcher/watcher.toml, else ./config/watcher.toml")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["auto", "text", "json", "journal"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"watcher.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"watcher.cli.{name}":
                raise
            continue  # a command whose module is not part of this build
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except WatcherError as exc:
        print(f"model-watcher: {exc.reason}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status
