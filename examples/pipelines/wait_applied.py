"""Wait until the serving hosts' model-watcher daemons applied a revision (publisher pipelines).

    python3 ci/wait_applied.py MODEL REVISION [--timeout SECONDS] [STATUS_URL ...]

Each STATUS_URL is one daemon's `GET /status` (the same JSON as `model-watcher status
--json`); without any, `model-watcher status --json` runs here (a runner on the serving host
itself). Exit 0 once every host serves REVISION; 1 as soon as one reports it rejected or
failed (printing the daemon's reason), or when the timeout passes. Standard library only, so
it runs on any runner with a Python 3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

REFUSED = ("rejected", "failed")


def read_status(source: str | None) -> dict[str, Any]:
    if source is None:
        out = subprocess.run(["model-watcher", "status", "--json"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        data: dict[str, Any] = json.loads(out)
        return data
    with urllib.request.urlopen(source, timeout=10) as resp:  # noqa: S310 - the operator's URL
        data = json.load(resp)
    return data


def verdict(status: dict[str, Any], model: str, revision: str) -> tuple[str, str]:
    """('applied' | 'refused' | 'pending', detail) for one host."""
    m = (status.get("models") or {}).get(model) or {}
    if m.get("applied_revision") == revision:
        return "applied", f"applied {m.get('applied_version') or ''}".strip()
    if m.get("last_revision") == revision and m.get("last_outcome") in REFUSED:
        return "refused", f"{m['last_outcome']}: {m.get('last_reason') or '(no reason)'}"
    return "pending", f"serving {m.get('applied_revision') or 'nothing'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("revision")
    p.add_argument("status_urls", nargs="*", metavar="STATUS_URL")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--interval", type=float, default=2.0)
    args = p.parse_intermixed_args(argv)
    sources: list[str | None] = list(args.status_urls) or [None]
    deadline = time.monotonic() + args.timeout
    last: dict[str, str] = {}
    while True:
        pending = []
        for source in sources:
            name = source or "this host"
            try:
                state, detail = verdict(read_status(source), args.model, args.revision)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                state, detail = "pending", f"status unavailable ({exc})"
            if state == "refused":
                print(f"{name}: {args.model}@{args.revision} {detail}", file=sys.stderr)
                return 1
            if last.get(name) != detail:
                print(f"{name}: {args.model}@{args.revision}: {detail}", flush=True)
                last[name] = detail
            if state == "pending":
                pending.append(name)
        if not pending:
            return 0
        if time.monotonic() >= deadline:
            print(f"timed out after {args.timeout:g}s waiting for: {', '.join(pending)}", file=sys.stderr)
            return 1
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
