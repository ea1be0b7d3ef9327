"""`model-watcher revision MODEL`: the config center's current revision of MODEL's document.

For publishers (examples/pipelines/): read the revision before building a new document, then
`publish --if-revision REV`, so a document someone else published in between is never
overwritten (compare-and-swap). Prints `0` when the key does not exist (what `--if-revision 0`
takes as "create only"). Exit 4 when the config center cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from watcher.cli.common import settings_from_args, source_plugin
from watcher.core.errors import SourceUnavailable
from watcher.sources.base import Source


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("revision", help="print the config center's current revision of a model "
                                        "document (0: absent), for publish --if-revision")
    p.add_argument("model")
    p.add_argument("--source", help="source kind to read (default: the settings' source)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def main() -> str:
        source = source_plugin(settings, args.source, Source)  # type: ignore[type-abstract]
        try:
            snapshot = await source.snapshot()
        finally:
            await source.aclose()
        change = snapshot.documents.get(args.model)
        return change.revision if change is not None and not change.deleted else "0"

    try:
        revision = asyncio.run(main())
    except SourceUnavailable as exc:
        print(f"model-watcher: {exc.reason}", file=sys.stderr)
        return 4
    print(revision)
    return 0
