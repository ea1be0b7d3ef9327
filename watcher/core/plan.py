"""Plan: what applying a new spec over the applied one takes, and why.

`noop` when nothing the server sees changed (metadata, version label), `hot` when only
paths the target can change in place changed, `restart` otherwise. The reason is the list
of changed dotted paths, so a log line says exactly what forced a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from watcher.core.spec import ModelSpec

PlanKind = Literal["noop", "hot", "restart"]
#: Paths whose change never needs the server to act.
RECORD_ONLY = ("metadata", "version", "health")


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    paths: tuple[str, ...]

    @property
    def reason(self) -> str:
        return ", ".join(self.paths) if self.paths else "no change"

    def __str__(self) -> str:
        return f"{self.kind} ({self.reason})"


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where `old` and `new` differ (dicts recursed, lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(changed_paths(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "*"]


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p.rstrip(".") or path.startswith(p.rstrip(".") + ".") for p in prefixes)


def make_plan(applied: ModelSpec | None, new: ModelSpec, *, hot_paths: tuple[str, ...] | None,
              can_restart: bool) -> Plan:
    """Decide noop / hot / restart.

    `hot_paths` is what the configured target can change in place (None: no target).
    With nothing applied yet the server's state is unknown, so the whole spec is pushed:
    hot when a target exists, else restart.
    """
    if hot_paths is None and not can_restart:
        # Watch-only: nothing to act on; record what was published.
        return Plan("noop", ("no target or runtime configured",))
    if applied is None:
        if hot_paths is not None and not (can_restart and new.runtime.image):
            return Plan("hot", ("*",))
        return Plan("restart" if can_restart else "hot", ("*",))
    paths = tuple(changed_paths(applied.canonical(), new.canonical()))
    acting = tuple(p for p in paths if not _under(p, RECORD_ONLY))
    if not acting:
        return Plan("noop", paths)
    if hot_paths is not None and all(_under(p, hot_paths) for p in acting):
        return Plan("hot", acting)
    return Plan("restart", acting)
