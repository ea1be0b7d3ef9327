"""`model-watcher pull FILE`: fetch what a model document needs, with progress bars.

- its image, through the configured docker runtime exactly as the daemon does (credentials,
  digest pinning, policy); prints the digest reference the model will run as;
- its remote weights (oci://, http(s)://, s3://), through the daemon's own stager into the
  daemon's cache (signature first, digests verified while streaming); prints the local path.
  Run ahead of a rollout, it makes the daemon's staging a cache hit (a prefetch).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from watcher.cli.common import settings_from_args
from watcher.core.errors import SettingsError
from watcher.core.spec import ModelSpec, parse_document
from watcher.observability import logs
from watcher.plugins import PluginContext, create
from watcher.settings import Settings

if TYPE_CHECKING:  # every command is imported to build the parser: keep this one light
    from watcher.runtimes.engine import PullProgress

WIDTH = 30


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="pull a model document's image and remote weights, with progress")
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


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} GB"


class ByteBar:
    """`[#####.....]  45%  120.0 MB/267.0 MB  85.1 MB/s  eta 2s` for weights and pushes."""

    def __init__(self, out: TextIO, label: str) -> None:
        self.out, self.label = out, label
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def update(self, done: int, total: int | None, rate: float | None = None, eta: float | None = None,
               force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 2.0):
            return
        self.last = now
        if rate is None:
            rate = done / max(now - self.started, 1e-6)
        if eta is None and total and rate:
            eta = max(total - done, 0) / rate
        frac = min(1.0, done / total) if total else 0.0
        filled = int(frac * WIDTH)
        line = (f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {frac:4.0%}  {human(done)}"
                f"/{human(total) if total else '?'}  {human(rate)}/s"
                + (f"  eta {eta:.0f}s" if eta is not None else ""))
        self.out.write(("\r" + line[:120].ljust(120)) if self.tty else line + "\n")
        self.out.flush()
        self.drawn = True

    def done(self) -> None:
        if self.tty and self.drawn:
            self.out.write("\n")


async def pull_weights(settings: Settings, spec: ModelSpec, out: TextIO) -> ModelSpec:
    """Verify (signature) and stage `spec`'s remote weights into the daemon's cache."""
    from watcher.core import verify
    from watcher.fetchers.stage import stager_for

    stager = stager_for(settings)
    await verify.verify_spec(spec, settings.trust, staged=stager.handles)
    bar = ByteBar(out, "weights")

    async def watch() -> None:
        while True:
            p = stager.board.get(spec.name)
            if p is not None:
                bar.update(p.done, p.total, p.rate or None, p.eta)
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        staged = await stager.stage(spec)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        p = stager.board.get(spec.name)
        if p is not None and p.state == "done":
            bar.update(p.done, p.total, p.rate or None, 0.0, force=True)
        bar.done()
        await stager.aclose()
    return staged


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.setup("WARNING", "text")
    spec = parse_document(args.file.read_bytes(), max_bytes=settings.reconcile.max_document_bytes)
    docker = settings.runtime is not None and settings.runtime.kind == "docker" and spec.runtime.image
    from watcher.fetchers.stage import stager_for

    remote = [u for u in (spec.model.uri, *(a.uri for a in spec.model.adapters))
              if stager_for(settings).handles(u)]
    if not docker and not remote:
        raise SettingsError("nothing to pull: no image for a docker runtime (runtime.kind = "
                            "\"docker\") and no remote weights (oci://, http(s)://, s3://)")
    if remote:
        staged = asyncio.run(pull_weights(settings, spec, sys.stderr))
        print(staged.model.uri)
    if docker:
        print(pull_image(settings, spec))
    return 0


def pull_image(settings: Settings, spec: ModelSpec) -> str:
    assert settings.runtime is not None
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

    return asyncio.run(main()) or str(spec.runtime.image)
