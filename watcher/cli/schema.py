"""`model-watcher schema`: the model document's JSON Schema (for editors and CI)."""

from __future__ import annotations

import argparse
import json

from watcher.core.spec import json_schema


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schema", help="print the model document's JSON Schema")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
