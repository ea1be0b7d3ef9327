"""`model-watcher once`: reconcile once and exit (cron, manual trigger, CI).

Exit status: 0 everything applied or already in line, 1 a revision was rejected or failed,
2 bad settings, 3 a daemon is running on this state (it reconciles already; two processes
must never act on one server), 4 the config center could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from watcher.cli.common import settings_from_args
from watcher.core.errors import SourceUnavailable
from watcher.observability import logs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("once", help="read the config center once, apply what changed, exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.setup(settings.log_level, settings.log_format)
    from watcher.core.events import EventBus
    from watcher.core.state import State
    from watcher.daemon import build
    from watcher.observability.audit import AuditLog

    state = State(settings.state_dir / "state.db")
    daemon = state.status()["daemon"]
    if daemon.get("running"):
        print(f"model-watcher: a daemon (pid {daemon['pid']}) already reconciles "
              f"{settings.state_dir}; not acting", file=sys.stderr)
        return 3

    async def main() -> int:
        bus = EventBus()
        audit = AuditLog(settings.state_dir / "audit.jsonl")
        bus.subscribe(audit.on_event)
        source, executor, reconciler = build(settings, state, bus, audit)
        reconciler.immediate = True
        reconciler.bind(asyncio.get_running_loop())
        try:
            await reconciler.recover()
            try:
                changes = await source.read_all()
            except SourceUnavailable as exc:
                print(f"model-watcher: config center unavailable: {exc.reason}", file=sys.stderr)
                return 4
            reconciler.snapshot(changes)
            await reconciler.idle()
        finally:
            with contextlib.suppress(Exception):
                await source.aclose()
            await executor.aclose()
            state.close()
        bad = [o for o in reconciler.outcomes if o.outcome in ("rejected", "failed")]
        for o in reconciler.outcomes:
            print(f"{o.model}\t{o.revision}\t{o.outcome}\t{o.reason}".rstrip())
        if not reconciler.outcomes:
            print("everything is in line")
        return 1 if bad else 0

    return asyncio.run(main())
