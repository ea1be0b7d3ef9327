"""Durable state in SQLite (WAL): what is applied, every revision seen, intents, daemon status.

One writer (the daemon) and any number of readers (`status`, `history`, the API). Every
write is its own short transaction, so a kill -9 loses at most the step in flight, and the
intent record tells the next start what that step was.

Tables
  revisions  every revision seen, with its outcome and reason (the model version registry)
  applied    per model: the revision and spec serving now, and the last stable revision
  intents    per model: written before acting, cleared on commit or rollback
  daemon     one row: pid, heartbeat, source connectivity
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.core.control import ControlTables
from watcher.core.history import HistoryTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    version TEXT,
    outcome TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    plan TEXT,
    spec TEXT,
    metadata TEXT,
    trace_id TEXT,
    seen_at REAL NOT NULL,
    finished_at REAL,
    stable INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS revisions_model ON revisions(model, id);
CREATE TABLE IF NOT EXISTS applied (
    model TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    version TEXT NOT NULL,
    spec TEXT NOT NULL,
    applied_at REAL NOT NULL,
    stable_revision TEXT
);
CREATE TABLE IF NOT EXISTS intents (
    model TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    spec TEXT NOT NULL,
    previous TEXT,
    step TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    model TEXT NOT NULL,
    argument TEXT,
    requested_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    done_at REAL,
    ok INTEGER,
    result TEXT
);
CREATE TABLE IF NOT EXISTS daemon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    started_at REAL,
    heartbeat REAL,
    source_kind TEXT,
    source_up INTEGER,
    source_detail TEXT,
    source_since REAL,
    ready_at REAL
);
"""



@dataclass(frozen=True)
class Applied:
    model: str
    revision: str
    version: str
    spec: dict[str, Any]
    applied_at: float
    stable_revision: str | None


@dataclass(frozen=True)
class Intent:
    model: str
    revision: str
    spec: dict[str, Any]
    previous: dict[str, Any] | None
    step: str
    started_at: float


class State(HistoryTables, ControlTables):
    """The daemon's database: the applied table and intents here; revisions (history) in
    HistoryTables (core/history.py); requests and the daemon row in ControlTables
    (core/control.py). One connection, one lock, short transactions."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None,
                                   timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        # The kernel caches the file; SQLite's own page cache (2 MiB by default) would hold
        # a second copy of the hot pages for a few lookups per apply (docs/performance.md).
        self._db.execute("PRAGMA cache_size=-256")
        if not readonly:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Columns added since a state file was created (CREATE IF NOT EXISTS adds none)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(daemon)")}
        if "ready_at" not in have:
            self._db.execute("ALTER TABLE daemon ADD COLUMN ready_at REAL")

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # -- applied ---------------------------------------------------------------
    def applied(self, model: str) -> Applied | None:
        row = self._exec("SELECT * FROM applied WHERE model=?", (model,)).fetchone()
        return _applied(row) if row else None

    def all_applied(self) -> dict[str, Applied]:
        return {r["model"]: _applied(r) for r in self._exec("SELECT * FROM applied ORDER BY model")}

    def commit(self, row_id: int, model: str, revision: str, version: str,
               spec: dict[str, Any], *, outcome: str = "applied", plan: str | None = None,
               reason: str | None = None, stable: bool = True) -> None:
        """Record `spec` as serving and finish its revision row, in one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO applied(model, revision, version, spec, applied_at, stable_revision)"
                    " VALUES(?,?,?,?,?,?) ON CONFLICT(model) DO UPDATE SET revision=excluded.revision,"
                    " version=excluded.version, spec=excluded.spec, applied_at=excluded.applied_at,"
                    " stable_revision=CASE WHEN ? THEN excluded.revision ELSE stable_revision END",
                    (model, revision, version, json.dumps(spec), now, revision if stable else None, stable),
                )
                self._db.execute(
                    "UPDATE revisions SET outcome=?, reason=?, plan=COALESCE(?, plan), finished_at=?,"
                    " stable=? WHERE id=?",
                    (outcome, reason, plan, now, int(stable), row_id),
                )
                self._db.execute("DELETE FROM intents WHERE model=?", (model,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget(self, model: str) -> None:
        """The model was unloaded after its document was deleted."""
        self._exec("DELETE FROM applied WHERE model=?", (model,))

    # -- intents ---------------------------------------------------------------
    def write_intent(self, model: str, revision: str, spec: dict[str, Any],
                     previous: dict[str, Any] | None, step: str) -> None:
        self._exec(
            "INSERT INTO intents(model, revision, spec, previous, step, started_at) VALUES(?,?,?,?,?,?)"
            " ON CONFLICT(model) DO UPDATE SET revision=excluded.revision, spec=excluded.spec,"
            " previous=excluded.previous, step=excluded.step, started_at=excluded.started_at",
            (model, revision, json.dumps(spec), json.dumps(previous) if previous else None, step,
             time.time()),
        )

    def set_intent_step(self, model: str, step: str) -> None:
        """How far the apply got (a restart's promotion step), for recovery."""
        self._exec("UPDATE intents SET step=? WHERE model=?", (step, model))

    def intent(self, model: str) -> Intent | None:
        return next((i for i in self.intents() if i.model == model), None)

    def clear_intent(self, model: str) -> None:
        self._exec("DELETE FROM intents WHERE model=?", (model,))

    def intents(self) -> list[Intent]:
        return [
            Intent(r["model"], r["revision"], json.loads(r["spec"]),
                   json.loads(r["previous"]) if r["previous"] else None, r["step"], r["started_at"])
            for r in self._exec("SELECT * FROM intents")
        ]


def _applied(row: sqlite3.Row) -> Applied:
    return Applied(row["model"], row["revision"], row["version"], json.loads(row["spec"]),
                   row["applied_at"], row["stable_revision"])
