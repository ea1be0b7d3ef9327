"""What eviction must keep: the weights of every model's applied and previous stable revision.

Read from the state database (watcher/core/state.py), read-only, so a rollback to the
previous stable revision never needs the network, and a restart of the server finds the
weights it serves. Unknown or unreadable state protects nothing more (never raises).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from watcher.core.state import State
from watcher.fetchers.cache import BlobCache

log = logging.getLogger("watcher.fetchers")


def _digests(spec: Any) -> set[str]:
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        return set()
    model = spec["model"]
    found = {model.get("sha256")} | {a.get("sha256") for a in model.get("adapters") or [] if isinstance(a, dict)}
    return {d for d in found if isinstance(d, str)}


def protected_digests(db: Path, cache: BlobCache) -> set[str]:
    if not db.exists():
        return set()
    try:
        state = State(db, readonly=True)
    except sqlite3.Error as exc:
        log.warning("cannot read %s to protect cached weights: %s", db, exc)
        return set()
    try:
        specs: list[Any] = []
        for model, applied in state.all_applied().items():
            specs.append(applied.spec)
            stable = state.last_stable(model, before=applied.revision)
            if stable is not None:
                specs.append(stable.get("spec"))
    except sqlite3.Error as exc:
        log.warning("cannot read %s to protect cached weights: %s", db, exc)
        return set()
    finally:
        state.close()
    out: set[str] = set()
    for spec in specs:
        for d in _digests(spec):
            out |= cache.members(d)
    return out
