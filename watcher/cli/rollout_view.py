"""What `rollout status` shows: the record, a progress bar per step and a row per member,
as one JSON-able dict (`--json` prints it) rendered as text by `render`.

Member rows come from the members' own reports (live only: a member that died is gone);
"step" is the step whose cohort holds the member (hrw ranking over the record's members).
"""

from __future__ import annotations

import time
from typing import Any

from watcher.fleet.decide import tally
from watcher.fleet.hrw import cohort_size
from watcher.fleet.record import RolloutRecord
from watcher.fleet.report import MemberReport

BAR = 20


def snapshot(record: RolloutRecord, reports: dict[str, MemberReport]) -> dict[str, Any]:
    model, revision = record.model, record.revision
    t = tally(record, reports) if record.revision else None
    took = t.took if t else set()
    n = len(record.members)
    steps = []
    for i, step in enumerate(record.policy.steps):
        members = record.cohort(i) if n else []
        log = next((h for h in record.history if h.step == i), None)
        steps.append({"step": i + 1, "percent": step.percent, "size": cohort_size(step.percent, n),
                      "serving": sum(1 for m in members if m in took),
                      "soak": record.policy.soak_of(i), "pause": step.pause,
                      "started_at": log.started_at if log else None,
                      "healthy_at": log.healthy_at if log else None,
                      "ended_at": log.ended_at if log else None})
    rows = []
    for member in sorted(set(record.members) | {m for m, r in reports.items() if model in r.models}):
        r = reports.get(member)
        m = r.model(model) if r else None
        joins = record.joins_at(member)
        rows.append({"member": member, "live": r is not None,
                     "step": joins + 1 if joins is not None else None,
                     "in_cohort": joins is not None and joins <= record.step,
                     "revision": m.revision if m else None, "version": m.version if m else None,
                     "serving_rollout": bool(m and m.took(revision)),
                     "state": m.state if m else "gone", "health": m.health if m else "",
                     "last": m.last if m else None, "outcome": m.outcome if m else None,
                     "note": m.note if m else "", "labels": r.labels if r else {}})
    return {"model": model, "rollout": record.id, "phase": record.phase,
            "step": record.step + 1, "steps": len(record.policy.steps), "revision": revision,
            "version": record.version, "previous": record.previous, "reason": record.reason,
            "failed": list(record.failed), "members": n, "covered": list(record.members),
            "serving": len(took),
            "created_at": record.created_at, "created_by": record.created_by,
            "policy": record.policy.model_dump(mode="json"), "progress": steps, "rows": rows,
            "at": time.time()}


def _bar(done: int, size: int) -> str:
    filled = round(BAR * done / size) if size else 0
    return "[" + "█" * filled + "░" * (BAR - filled) + "]"


def _short(revision: str | None) -> str:
    return (revision or "-")[:12]


def render(d: dict[str, Any]) -> str:
    head = (f"rollout {d['rollout']} of {d['model']}: {d['phase']}, step {d['step']} of "
            f"{d['steps']}; revision {_short(d['revision'])} ({d['version'] or '-'}); "
            f"{d['serving']} of {d['members']} members serve it")
    lines = [head]
    if d["reason"]:
        lines.append(f"  {d['reason']}")
    for s in d["progress"]:
        mark = ">" if s["step"] == d["step"] and d["phase"] in ("progressing", "paused") else " "
        extra = " pause" if s["pause"] else f" soak {s['soak']:g}s"
        lines.append(f"{mark} step {s['step']:>2} {s['percent']:>5g} % {_bar(s['serving'], s['size'])} "
                     f"{s['serving']:>4}/{s['size']:<4}{extra}")
    header = ("MEMBER", "STEP", "COHORT", "REVISION", "VERSION", "STATE", "HEALTH", "NOTE")
    table = [header] + [(r["member"], str(r["step"] or "-"), "yes" if r["in_cohort"] else "no",
                         _short(r["revision"]), r["version"] or "-", r["state"],
                         r["health"] or "-", (r["note"] or "")[:60]) for r in d["rows"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in table]
    return "\n".join(lines)
