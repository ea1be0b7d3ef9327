"""`model-watcher status`: what is applied per model, the last outcome, the source's health."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from watcher.cli.common import settings_from_args
from watcher.core.state import State


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show applied revisions and the daemon's health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def open_state(args: argparse.Namespace) -> State:
    settings = settings_from_args(args)
    return State(settings.state_dir / "state.db")


def weights_progress(args: argparse.Namespace) -> dict[str, Any]:
    """Remote weights being staged (or last staged) per model: bytes, rate, eta, state."""
    from watcher.fetchers.options import parse_weights_options
    from watcher.fetchers.progress import read_progress

    settings = settings_from_args(args)
    root = parse_weights_options(settings.weights).cache_dir or settings.state_dir / "blobs"
    return read_progress(root / "progress.json")


def fleet_status(args: argparse.Namespace) -> dict[str, Any]:
    """The fleet member's own view (watcher/fleet/member.py writes it): waiting reasons."""
    path = settings_from_args(args).state_dir / "fleet.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _fetch_line(name: str, p: dict[str, Any]) -> str:
    from watcher.cli.pull import human

    total, done = p.get("total"), int(p.get("done") or 0)
    amount = f"{human(done)}/{human(total) if total else '?'}"
    if p.get("state") == "fetching":
        eta = p.get("eta")
        return (f"{name}: fetching weights {amount} at {human(float(p.get('rate') or 0))}/s"
                + (f", eta {float(eta):.0f}s" if eta is not None else "") + f" ({p.get('uri')})")
    reason = f": {p['reason']}" if p.get("reason") else ""
    return f"{name}: weights {p.get('state')} {amount} ({_ago(p.get('updated'))}){reason}"


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = int(time.time() - ts)
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def run(args: argparse.Namespace) -> int:
    state = open_state(args)
    status: dict[str, Any] = state.status()
    status["weights"] = weights_progress(args)
    status["fleet"] = fleet_status(args)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    d = status["daemon"]
    running = f"running (pid {d['pid']})" if d.get("running") else "not running"
    src = d.get("source_up")
    src_text = "ok" if src else "DOWN" if src is False else "unknown"
    print(f"daemon: {running}; source {d.get('source_kind', '-')}: {src_text}"
          f" ({d.get('source_detail') or '-'}, since {_ago(d.get('source_since'))})")
    if not status["models"]:
        print("no models seen yet")
    for name, m in status["models"].items():
        print(f"{name}: applied {m['applied_version'] or '-'} @ {m['applied_revision'] or '-'}"
              f" ({_ago(m['applied_at'])}); stable {m['stable_revision'] or '-'}")
        if m["last_revision"] != m["applied_revision"] or m["last_outcome"] not in ("applied", "noop"):
            print(f"  last: {m['last_revision']} {m['last_outcome']}"
                  + (f": {m['last_reason']}" if m["last_reason"] else ""))
    for name in status["intents"]:
        print(f"{name}: an apply is in progress or was interrupted")
    fleet = status["fleet"]
    if fleet and d.get("running"):
        print(f"fleet: member {fleet.get('member')}"
              + (" (leads the rollout controller)" if fleet.get("leading") else ""))
        for name, m in (fleet.get("models") or {}).items():
            if m.get("waiting"):
                print(f"{name}: {m['waiting']}")
    for name, p in status["weights"].items():
        if p.get("state") == "fetching" or time.time() - float(p.get("updated") or 0) < 3600:
            print(_fetch_line(name, p))
    return 0
