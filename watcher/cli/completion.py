"""`model-watcher completion bash|zsh`: a shell completion script, generated from the parser.

shtab walks the same argparse tree the command line runs, so every command and option (and
the files a FILE argument takes) completes, and a new option completes without any change
here. Install:

    model-watcher completion bash > /etc/bash_completion.d/model-watcher
    model-watcher completion zsh > "${fpath[1]}/_model-watcher"    # then: compinit
"""

from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("completion", help="print a completion script for bash or zsh")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shtab

    from watcher.cli import build_parser

    parser = build_parser()
    _mark_files(parser, shtab.FILE, shtab.DIRECTORY)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0


def _mark_files(parser: argparse.ArgumentParser, files: object,
                directories: object) -> None:
    """Arguments that take a path (type=Path, --config) complete file names; --out a directory."""
    from pathlib import Path

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _mark_files(child, files, directories)
        elif action.dest == "out":
            action.complete = directories  # type: ignore[attr-defined]
        elif action.type is Path or action.dest == "config":
            action.complete = files  # type: ignore[attr-defined]
