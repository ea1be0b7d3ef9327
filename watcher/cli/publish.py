"""`model-watcher publish MODEL FILE`: validate exactly as the daemon would, then write.

For CI/CD pipelines and operators. A rejected document is never written. `--if-revision`
makes the write a compare-and-swap (etcd mod_revision, Nacos md5, file hash), so two
publishers cannot clobber each other: a stale one exits 1 with the current revision.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.cli.common import settings_from_args, source_plugin
from watcher.cli.validate import check_file
from watcher.core.errors import ConflictError, RejectedError, SourceUnavailable
from watcher.sources.base import Publisher

if TYPE_CHECKING:
    from watcher.fleet.record import RolloutPolicy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("publish", help="validate a model document, then write it to the source")
    p.add_argument("model")
    p.add_argument("file", type=Path)
    p.add_argument("--environment", "-e", help="environment whose policy applies")
    p.add_argument("--source", help="source kind to publish to (default: the settings' source)")
    p.add_argument("--if-revision", "--if-md5", dest="if_revision",
                   help="write only if the current revision is this (compare-and-swap)")
    p.add_argument("--verify", action="store_true", help="also verify weights digest/signature")
    p.add_argument("--rollout", nargs="?", const="", metavar="POLICY",
                   help="roll it out progressively across the fleet (docs/fleet.md): a YAML/JSON "
                        "file or inline mapping, e.g. '{steps: [10, 50, 100], soak: 60}'; "
                        "without a value, the default policy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        raw, spec = check_file(args.file, settings, key=args.model, verify=args.verify)
    except RejectedError as exc:
        print(f"model-watcher: not published: {exc.reason}", file=sys.stderr)
        return 1
    rollout = _rollout_policy(args.rollout) if args.rollout is not None else None

    async def main() -> str:
        publisher = source_plugin(settings, args.source, Publisher)  # type: ignore[type-abstract]
        try:
            if rollout is not None:
                from watcher.fleet.publish import publish_with_rollout

                revision, record = await publish_with_rollout(
                    settings, publisher, args.model, raw, spec.version, rollout, args.if_revision)
                print(f"rollout {record.id} of {args.model} starts: steps "
                      f"{'/'.join(f'{s.percent:g}' for s in rollout.steps)} %", file=sys.stderr)
                return revision
            revision = await publisher.publish(args.model, raw, if_revision=args.if_revision)
            return str(revision)
        finally:
            await publisher.aclose()

    try:
        revision = asyncio.run(main())
    except ConflictError as exc:
        print(f"model-watcher: not published: {exc.reason}", file=sys.stderr)
        return 1
    except SourceUnavailable as exc:
        print(f"model-watcher: not published: {exc.reason}", file=sys.stderr)
        return 4
    print(revision)
    return 0


def _rollout_policy(text: str) -> RolloutPolicy:
    """`--rollout`'s value: a file holding the policy, else the policy itself."""
    from watcher.fleet.record import parse_policy

    path = Path(text)
    if text and path.is_file():
        text = path.read_text(encoding="utf-8")
    return parse_policy(text)
