"""The revisions table: every revision seen, with its outcome and reason (the model version
registry), and the questions the daemon asks of it: what was handled last (exactly once),
what is a rollback target (stable), what a kill left unfinished. A mixin of `State`
(core/state.py), over its one SQLite connection."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from watcher.core.outcome import LABELS

OUTCOMES = ("pending", *LABELS)


class HistoryTables:
    if TYPE_CHECKING:
        def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor: ...

    # -- revisions (history) ---------------------------------------------------
    def record_seen(self, model: str, revision: str, *, source: str, version: str | None = None,
                    spec: dict[str, Any] | None = None, trace_id: str | None = None) -> int:
        metadata = json.dumps(spec.get("metadata")) if spec else None
        cur = self._exec(
            "INSERT INTO revisions(model, revision, source, version, spec, metadata, trace_id, seen_at)"
            " VALUES(?,?,?,?,?,?,?,?)",
            (model, revision, source, version, json.dumps(spec) if spec else None, metadata,
             trace_id, time.time()),
        )
        return int(cur.lastrowid or 0)

    def update_seen(self, row_id: int, *, version: str | None, spec: dict[str, Any] | None) -> None:
        self._exec(
            "UPDATE revisions SET version=?, spec=?, metadata=? WHERE id=?",
            (version, json.dumps(spec) if spec else None,
             json.dumps(spec.get("metadata")) if spec else None, row_id),
        )

    def finish(self, row_id: int, outcome: str, reason: str | None = None,
               plan: str | None = None) -> None:
        assert outcome in OUTCOMES, outcome
        self._exec(
            "UPDATE revisions SET outcome=?, reason=?, plan=COALESCE(?, plan), finished_at=?"
            " WHERE id=?",
            (outcome, reason, plan, time.time(), row_id),
        )

    def mark_unstable(self, model: str, revision: str) -> None:
        """`revision` was rolled back away from: no longer a rollback target."""
        self._exec("UPDATE revisions SET stable=0 WHERE model=? AND revision=?", (model, revision))

    def pending(self) -> list[dict[str, Any]]:
        """Rows never finished (the daemon was killed while handling them), oldest first."""
        rows = self._exec("SELECT * FROM revisions WHERE outcome='pending' ORDER BY id")
        return [_row(r) for r in rows]

    def interruptions(self, model: str, revision: str) -> int:
        """How often handling this revision was cut short by the daemon dying."""
        row = self._exec(
            "SELECT COUNT(*) FROM revisions WHERE model=? AND revision=? AND outcome='superseded'",
            (model, revision)).fetchone()
        return int(row[0])

    def trim(self, keep: int, keep_stable: int) -> int:
        """Forget history beyond the newest `keep` rows of each model, but keep its newest
        `keep_stable` stable rows (rollback targets) and every unfinished one. Returns how
        many rows went."""
        cur = self._exec(
            "DELETE FROM revisions WHERE id IN (SELECT id FROM (SELECT id, outcome, stable,"
            " ROW_NUMBER() OVER (PARTITION BY model ORDER BY id DESC) AS rn,"
            " ROW_NUMBER() OVER (PARTITION BY model, stable ORDER BY id DESC) AS srn"
            " FROM revisions) WHERE rn > ? AND outcome != 'pending'"
            " AND NOT (stable = 1 AND srn <= ?))", (keep, keep_stable))
        return int(cur.rowcount or 0)

    def last_seen(self, model: str) -> dict[str, Any] | None:
        row = self._exec(
            "SELECT * FROM revisions WHERE model=? AND outcome != 'superseded' ORDER BY id DESC LIMIT 1",
            (model,),
        ).fetchone()
        return _row(row) if row else None

    def last_handled(self, model: str) -> str | None:
        """The newest revision the source delivered and the daemon finished handling.

        Rows written by an operator's rollback do not count: the source still holds its
        own newest revision, and that one must not be applied again by itself.
        """
        row = self._exec(
            "SELECT revision FROM revisions WHERE model=? AND source != 'rollback'"
            " AND outcome NOT IN ('superseded', 'pending') ORDER BY id DESC LIMIT 1",
            (model,),
        ).fetchone()
        return str(row[0]) if row else None

    def history(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if model is None:
            rows = self._exec("SELECT * FROM revisions ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._exec(
                "SELECT * FROM revisions WHERE model=? ORDER BY id DESC LIMIT ?", (model, limit)
            )
        return [_row(r) for r in rows]

    def find_revision(self, model: str, revision: str) -> dict[str, Any] | None:
        row = self._exec(
            "SELECT * FROM revisions WHERE model=? AND revision=? AND spec IS NOT NULL"
            " AND outcome IN ('applied','noop','rolled_back') ORDER BY id DESC LIMIT 1",
            (model, revision),
        ).fetchone()
        return _row(row) if row else None

    def last_stable(self, model: str, *, before: str | None = None) -> dict[str, Any] | None:
        """The newest stable revision of `model` other than `before`."""
        row = self._exec(
            "SELECT * FROM revisions WHERE model=? AND stable=1 AND spec IS NOT NULL"
            " AND revision != COALESCE(?, '') ORDER BY id DESC LIMIT 1",
            (model, before),
        ).fetchone()
        return _row(row) if row else None

    def models(self) -> list[str]:
        rows = self._exec("SELECT DISTINCT model FROM revisions UNION SELECT model FROM applied")
        return sorted(r[0] for r in rows)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in ("spec", "metadata"):
        if d.get(k):
            d[k] = json.loads(d[k])
    d["stable"] = bool(d["stable"])
    return d
