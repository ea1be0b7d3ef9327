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

from watcher.cli.common import settings_from_args, source_plugin
from watcher.cli.validate import check_file
from watcher.core.errors import ConflictError, RejectedError, SourceUnavailable
from watcher.sources.base import Publisher


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("publish", help="validate a model document, then write it to the source")
    p.add_argument("model")
    p.add_argument("file", type=Path)
    p.add_argument("--environment", "-e", help="environment whose policy applies")
    p.add_argument("--source", help="source kind to publish to (default: the settings' source)")
    p.add_argument("--if-revision", "--if-md5", dest="if_revision",
                   help="write only if the current revision is this (compare-and-swap)")
    p.add_argument("--verify", action="store_true", help="also verify weights digest/signature")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        raw, _ = check_file(args.file, settings, key=args.model, verify=args.verify)
    except RejectedError as exc:
        print(f"model-watcher: not published: {exc.reason}", file=sys.stderr)
        return 1

    async def main() -> str:
        publisher = source_plugin(settings, args.source, Publisher)  # type: ignore[type-abstract]
        try:
            revision: str = await publisher.publish(args.model, raw, if_revision=args.if_revision)
            return revision
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
