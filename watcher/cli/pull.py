"""`model-watcher pull FILE`: validate a model document and pull its image, with a progress bar.

Uses the configured docker runtime exactly as the daemon does (credentials, digest pinning,
policy), so a successful pull here means the daemon's `prepare` will find the image; prints
the digest reference the model will run as.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from watcher.cli.common import settings_from_args
from watcher.core.errors import SettingsError
from watcher.core.spec import parse_document
from watcher.observability import logs
from watcher.plugins import PluginContext, create
from watcher.runtimes.engine import PullProgress

WIDTH = 30


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="pull a model document's image (docker runtime) with progress")
    p.add_argument("file", type=Path, help="model document (YAML or JSON)")
    p.set_defaults(func=run)


def bar(p: PullProgress) -> str:
    """One line: `[#####.....]  45%  12.3/27.0 MB  Downloading` (by layers when the
    engine gives no byte counts, as Podman does)."""
    if p.total:
        frac = min(1.0, p.current / p.total)
        amount = f"{p.current / 1e6:.1f}/{p.total / 1e6:.1f} MB"
    elif p.seen:
        frac = len(p.done) / len(p.seen)
        amount = f"{len(p.done)}/{len(p.seen)} layers"
    else:
        frac, amount = 0.0, "-"
    filled = int(frac * WIDTH)
    return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {frac:4.0%}  {amount}  {p.status}"


class ProgressBar:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def __call__(self, p: PullProgress) -> None:
        line = bar(p)
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.out.write("\r" + line[:120].ljust(120))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.setup("WARNING", "text")
    if settings.runtime is None or settings.runtime.kind != "docker":
        raise SettingsError("pull needs runtime.kind = \"docker\" in the settings")
    spec = parse_document(args.file.read_bytes(), max_bytes=settings.reconcile.max_document_bytes)
    ctx = PluginContext(state_dir=settings.state_dir, environment=settings.environment)
    options = settings.runtime.options()

    async def main() -> str | None:
        from watcher.runtimes.docker import DockerRuntime

        runtime = create("runtime", options, ctx)
        assert isinstance(runtime, DockerRuntime)  # kind = "docker", checked above
        progress = ProgressBar(sys.stderr)
        runtime.on_progress = progress
        try:
            await runtime.prepare(spec)
        finally:
            progress.done()
            await runtime.aclose()
        pinned: str | None = runtime.pinned(spec)
        return pinned

    print(asyncio.run(main()) or spec.runtime.image)
    return 0
