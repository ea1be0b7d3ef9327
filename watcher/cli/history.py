"""`model-watcher history MODEL`: the model version registry, newest first."""

from __future__ import annotations

import argparse
import json
import time

from watcher.cli.status import open_state


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("history", help="every revision of a model with outcome and metadata")
    p.add_argument("model")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = open_state(args).history(args.model, args.limit)
    if args.json:
        for r in rows:
            r.pop("spec", None)
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no history for {args.model}")
        return 1
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["seen_at"]))
        stable = " [stable]" if r["stable"] else ""
        print(f"{when}  {r['revision']:<18} {r['version'] or '-':<16} {r['outcome']:<11}"
              f" {r['source']}{stable}")
        meta = r.get("metadata") or {}
        facts = [f"{k}={meta[k]}" for k in ("model_id", "training_data_version", "created_at")
                 if meta.get(k)]
        facts += [f"{k}={v}" for k, v in (meta.get("metrics") or {}).items()]
        if facts:
            print("    " + "  ".join(facts))
        if r["plan"]:
            print(f"    plan: {r['plan']}")
        if r["reason"]:
            print(f"    reason: {r['reason']}")
    return 0
