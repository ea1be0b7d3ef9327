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
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.core.outcome import LABELS

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
    source_since REAL
);
"""

OUTCOMES = ("pending", *LABELS)


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


class State:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None,
                                   timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        if not readonly:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

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

    # -- operator requests (CLI -> running daemon) ------------------------------
    def add_request(self, action: str, model: str, argument: str | None, by: str) -> int:
        cur = self._exec(
            "INSERT INTO requests(action, model, argument, requested_by, created_at)"
            " VALUES(?,?,?,?,?)", (action, model, argument, by, time.time()),
        )
        return int(cur.lastrowid or 0)

    def pending_requests(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._exec("SELECT * FROM requests WHERE done_at IS NULL ORDER BY id")]

    def finish_request(self, request_id: int, ok: bool, result: str) -> None:
        self._exec("UPDATE requests SET done_at=?, ok=?, result=? WHERE id=?",
                   (time.time(), int(ok), result, request_id))

    def request(self, request_id: int) -> dict[str, Any] | None:
        row = self._exec("SELECT * FROM requests WHERE id=?", (request_id,)).fetchone()
        return dict(row) if row else None

    # -- daemon ----------------------------------------------------------------
    def daemon_started(self, source_kind: str) -> None:
        now = time.time()
        self._exec(
            "INSERT INTO daemon(id, pid, started_at, heartbeat, source_kind, source_up, source_detail,"
            " source_since) VALUES(1,?,?,?,?,NULL,'starting',?) ON CONFLICT(id) DO UPDATE SET"
            " pid=excluded.pid, started_at=excluded.started_at, heartbeat=excluded.heartbeat,"
            " source_kind=excluded.source_kind, source_up=NULL, source_detail='starting',"
            " source_since=excluded.source_since",
            (os.getpid(), now, now, source_kind, now),
        )

    def daemon_stopped(self) -> None:
        self._exec("UPDATE daemon SET pid=NULL, heartbeat=? WHERE id=1", (time.time(),))

    def heartbeat(self) -> None:
        self._exec("UPDATE daemon SET heartbeat=? WHERE id=1", (time.time(),))

    def set_source(self, up: bool, detail: str) -> None:
        self._exec(
            "UPDATE daemon SET source_up=?, source_detail=?, source_since=? WHERE id=1",
            (int(up), detail, time.time()),
        )

    def status(self) -> dict[str, Any]:
        """Everything `status` shows, JSON-able."""
        d = self._exec("SELECT * FROM daemon WHERE id=1").fetchone()
        daemon: dict[str, Any] = dict(d) if d else {}
        if daemon.get("pid") and not _pid_alive(int(daemon["pid"])):
            daemon["pid"] = None
        daemon["running"] = bool(daemon.get("pid"))
        if daemon.get("source_up") is not None:
            daemon["source_up"] = bool(daemon["source_up"])
        models: dict[str, Any] = {}
        for name in self.models():
            a = self.applied(name)
            last = self.last_seen(name)
            models[name] = {
                "applied_revision": a.revision if a else None,
                "applied_version": a.version if a else None,
                "applied_at": a.applied_at if a else None,
                "stable_revision": a.stable_revision if a else None,
                "last_revision": last["revision"] if last else None,
                "last_outcome": last["outcome"] if last else None,
                "last_reason": last["reason"] if last else None,
            }
        pending = [i.model for i in self.intents()]
        return {"daemon": daemon, "models": models, "intents": pending}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _applied(row: sqlite3.Row) -> Applied:
    return Applied(row["model"], row["revision"], row["version"], json.loads(row["spec"]),
                   row["applied_at"], row["stable_revision"])


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in ("spec", "metadata"):
        if d.get(k):
            d[k] = json.loads(d[k])
    d["stable"] = bool(d["stable"])
    return d
