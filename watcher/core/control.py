"""The state tables the CLI and the daemon talk through: operator requests (CLI -> daemon:
`rollback` while a daemon runs) and the daemon's own row (pid, heartbeat, source health),
plus the `status` view over everything. A mixin of `State` (core/state.py), over its one
SQLite connection."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watcher.core.state import Applied, Intent


class ControlTables:
    if TYPE_CHECKING:
        def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor: ...
        def models(self) -> list[str]: ...
        def applied(self, model: str) -> Applied | None: ...
        def last_seen(self, model: str) -> dict[str, Any] | None: ...
        def intents(self) -> list[Intent]: ...

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
            " source_since=excluded.source_since, ready_at=NULL",
            (os.getpid(), now, now, source_kind, now),
        )

    def daemon_stopped(self) -> None:
        self._exec("UPDATE daemon SET pid=NULL, heartbeat=? WHERE id=1", (time.time(),))

    def set_ready(self) -> None:
        """The first full reconcile after start is done (READY=1)."""
        self._exec("UPDATE daemon SET ready_at=? WHERE id=1", (time.time(),))

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
