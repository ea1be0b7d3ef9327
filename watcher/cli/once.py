"""`model-watcher once`: reconcile once and exit (cron, manual trigger, CI).

Exit status: 0 everything applied or already in line, 1 a revision was rejected or failed,
2 bad settings, 3 a daemon is running on this state (it reconciles already; two processes
must never act on one server), 4 the config center could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
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
    from watcher.assembly import build
    from watcher.core.events import EventBus
    from watcher.core.recorder import OutcomeBuffer
    from watcher.core.state import State
    from watcher.core.statelock import StateLock
    from watcher.observability.audit import AuditLog

    lock = StateLock(settings.state_dir)
    if not lock.acquire():
        print(f"model-watcher: a daemon (pid {lock.holder() or '?'}) already reconciles "
              f"{settings.state_dir}; not acting", file=sys.stderr)
        return 3
    state = State(settings.state_dir / "state.db")

    async def main() -> int:
        bus = EventBus()
        audit = AuditLog(settings.state_dir / "audit.jsonl")
        bus.subscribe(audit.on_message)
        buffer = OutcomeBuffer()
        bus.subscribe(buffer)
        parts = build(settings, state, bus)
        reconciler = parts.reconciler
        reconciler.immediate = True
        try:
            await reconciler.start()
            try:
                snapshot = await parts.source.snapshot()
            except SourceUnavailable as exc:
                print(f"model-watcher: config center unavailable: {exc.reason}", file=sys.stderr)
                return 4
            reconciler.connectivity(True, "once")
            reconciler.snapshot(snapshot.documents)
            await reconciler.idle()
        finally:
            await parts.aclose()
            audit.close()
            state.close()
        outcomes = list(buffer.outcomes)
        for o in outcomes:
            print(f"{o.model}\t{o.revision}\t{o.label}\t{o.reason}".rstrip())
        if not outcomes:
            print("everything is in line")
        return 1 if buffer.failed() else 0

    try:
        return asyncio.run(main())
    finally:
        lock.release()
