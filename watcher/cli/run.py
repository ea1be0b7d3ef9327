"""`model-watcher run`: the daemon (systemd service or sidecar)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler

from watcher.cli.common import settings_from_args
from watcher.observability import logs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the daemon until SIGTERM (SIGHUP reloads settings)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.setup(settings.log_level, settings.log_format)
    # systemd's watchdog kills a wedged daemon with SIGABRT: print every thread's stack on
    # stderr (the journal) first, so the wedge can be found. C-level: runs with the loop stuck.
    faulthandler.enable()
    from watcher.daemon import Daemon

    async def main() -> int:
        return await Daemon(settings, getattr(args, "config", None)).run()

    return asyncio.run(main())
