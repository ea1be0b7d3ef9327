"""`model-watcher rollout status|pause|resume|promote|abort MODEL`: watch and steer a fleet
rollout (docs/fleet.md). The CLI talks to the config center directly (the `[fleet]` and
`source` sections of the settings), so it works from any host, with or without a daemon.

Every change is a compare-and-swap on the record version read, retried on a lost race, so
an operator's command and the controller never overwrite each other: the controller reads
the operator's write back and decides from there.

    status   a table of the covered members and a progress bar per step (--json, --watch)
    pause    nothing advances until `resume` (abort conditions still apply)
    resume   go on from where it paused
    promote  go to the next step now, without waiting for health and soak (--full: 100 %)
    abort    stop; members that took the revision roll back to their previous stable one
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from watcher.cli.common import settings_from_args
from watcher.core.errors import ConflictError, RejectedError, SourceUnavailable
from watcher.observability.audit import _actor
from watcher.settings import Settings

if TYPE_CHECKING:  # every command module is imported to build the parser, `run` included
    from watcher.fleet.backend import FleetBackend
    from watcher.fleet.record import RolloutRecord

ATTEMPTS = 10


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollout", help="watch and steer a fleet rollout (etcd, Nacos)")
    actions = p.add_subparsers(dest="rollout_action", metavar="ACTION", required=True)
    s = actions.add_parser("status", help="members, cohorts and a progress bar per step")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--watch", type=float, metavar="SECONDS", nargs="?", const=1.0,
                   help="redraw every SECONDS (default 1) until the rollout ends (exit 0 "
                        "completed, 1 aborted) or ^C")
    s.set_defaults(func=status)
    for name, text in (("pause", "stop advancing"), ("resume", "advance again"),
                       ("promote", "go to the next step now"), ("abort", "abort and roll back")):
        a = actions.add_parser(name, help=text)
        a.add_argument("model")
        if name == "promote":
            a.add_argument("--full", action="store_true", help="go to the last step (100 %%)")
        if name == "abort":
            a.add_argument("--reason", default="", help="said in history, audit and alerts")
        a.set_defaults(func=steer)


def open_backend(settings: Settings) -> FleetBackend:
    """The center's fleet backend from `[fleet]` + `source` (enabled or not: a publisher's
    or operator's host need not run a daemon)."""
    from watcher.fleet.feature import create_backend
    from watcher.fleet.settings import fleet_settings

    fleet = fleet_settings(settings, require_enabled=False)
    assert fleet is not None
    backend, _ = create_backend(fleet, settings)
    return backend


def run_with(settings: Settings, work: Callable[[FleetBackend], Awaitable[int]]) -> int:
    async def main() -> int:
        backend = open_backend(settings)
        try:
            return await work(backend)
        finally:
            await backend.aclose()

    try:
        return asyncio.run(main())
    except SourceUnavailable as exc:
        print(f"model-watcher: {exc.reason}", file=sys.stderr)
        return 4


def change(record: RolloutRecord, action: str, args: argparse.Namespace, now: float) -> RolloutRecord:
    """The record after the operator's `action`; RejectedError when it does not apply."""
    from watcher.fleet.decide import advance, end

    who = _actor()
    if not record.active:
        raise RejectedError(f"{record.model}: rollout {record.id} is {record.phase}; "
                            f"nothing to {action}")
    if action == "abort":
        why = f"aborted by {who}" + (f": {args.reason}" if args.reason else "")
        return end(record, now, "aborted", why)
    if record.phase == "pending":
        raise RejectedError(f"{record.model}: rollout {record.id} has not started yet (the "
                            "controller has not seen its document); only abort applies")
    if action == "pause":
        if record.phase == "paused":
            raise RejectedError(f"{record.model}: rollout {record.id} is paused already")
        return record.next(phase="paused", reason=f"paused by {who}", updated_at=now)
    if action == "resume":
        if record.phase != "paused":
            raise RejectedError(f"{record.model}: rollout {record.id} is not paused")
        return record.next(phase="progressing", reason="", updated_at=now)
    last = len(record.policy.steps) - 1
    if record.step >= last:
        raise RejectedError(f"{record.model}: rollout {record.id} is at its last step already")
    return advance(record, now, to=last if args.full else None)


def steer(args: argparse.Namespace) -> int:
    action = str(args.rollout_action)
    settings = settings_from_args(args)

    async def work(backend: FleetBackend) -> int:
        for _ in range(ATTEMPTS):
            stored = await backend.read_rollout(args.model)
            if stored is None:
                raise RejectedError(f"{args.model}: no rollout (publish --rollout starts one)")
            new = change(stored.record, action, args, time.time())
            if await backend.write_rollout(new, stored.version) is not None:
                print(f"{args.model}: rollout {new.id} {new.phase}: {new.where()}"
                      + (f" ({new.reason})" if new.reason else ""))
                return 0
        raise ConflictError(f"{args.model}: the rollout record kept changing; try again")

    try:
        return run_with(settings, work)
    except RejectedError as exc:
        print(f"model-watcher: {exc.reason}", file=sys.stderr)
        return 1


def status(args: argparse.Namespace) -> int:
    from watcher.cli.rollout_view import render, snapshot

    settings = settings_from_args(args)

    async def work(backend: FleetBackend) -> int:
        while True:
            stored = await backend.read_rollout(args.model)
            if stored is None:
                print(f"model-watcher: {args.model}: no rollout", file=sys.stderr)
                return 1
            data = snapshot(stored.record, await backend.members())
            if args.json:
                print(json.dumps(data, indent=2, default=str))
            else:
                if args.watch:
                    print("\x1b[2J\x1b[H", end="")
                print(render(data))
            if not args.watch:
                return 0
            if not stored.record.active:  # a pipeline waits on this: an abort fails its job
                return 0 if stored.record.phase == "completed" else 1
            await asyncio.sleep(args.watch)

    return run_with(settings, work)
