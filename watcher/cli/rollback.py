"""`model-watcher rollback MODEL [--to REVISION]`: put the last stable revision back.

With the daemon running, the request goes through its state database (and SIGUSR1), so
only the daemon ever acts on the server; otherwise this process applies it itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import time

from watcher.cli.common import settings_from_args
from watcher.core.errors import WatcherError
from watcher.core.state import State
from watcher.core.statelock import StateLock
from watcher.observability import logs
from watcher.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollback", help="re-apply the last stable revision (or --to REVISION)")
    p.add_argument("model")
    p.add_argument("--to", dest="to_revision")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.setup(settings.log_level, "text" if settings.log_format == "auto" else settings.log_format)
    state = State(settings.state_dir / "state.db")
    by = f"operator:{getpass.getuser()}"
    lock = StateLock(settings.state_dir)
    if not lock.acquire():
        return _through_daemon(state, lock.holder(), args, by)
    try:
        return asyncio.run(_act(settings, state, args, by))
    finally:
        lock.release()


def _through_daemon(state: State, pid: int | None, args: argparse.Namespace, by: str) -> int:
    """Queue the request for the running daemon (the only process acting on the server)."""
    req = state.add_request("rollback", args.model, args.to_revision, by)
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        row = state.request(req)
        if row and row["done_at"]:
            print(row["result"])
            return 0 if row["ok"] else 1
        time.sleep(0.2)
    print("model-watcher: the daemon did not answer the rollback request in time", file=sys.stderr)
    return 1


async def _act(settings: Settings, state: State, args: argparse.Namespace, by: str) -> int:
    """No daemon runs: build the same parts and roll back from this process."""
    from watcher.assembly import build
    from watcher.core.events import EventBus
    from watcher.observability.audit import AuditLog

    bus = EventBus()
    audit = AuditLog(settings.state_dir / "audit.jsonl")
    bus.subscribe(audit.on_message)
    parts = build(settings, state, bus)
    try:
        await parts.reconciler.start()
        out = await parts.reconciler.rollback(args.model, args.to_revision, by=by)
    except WatcherError as exc:
        print(f"model-watcher: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        await parts.aclose()
        audit.close()
    print(f"{out.label}: {args.model} @ {out.revision} {out.reason}".rstrip())
    return 0 if out.ok else 1
