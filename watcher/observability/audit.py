"""Append-only JSON-lines audit log: who, what, when, which revision, which outcome.

One line per decision (applied, noop, rejected, failed, rolled_back, deleted, operator
actions), flushed and fsynced before the call returns, so the log survives a crash of the
daemon. It never contains secrets: specs are not copied in, only names, revisions, reasons.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from watcher.core.events import Event, Kind

AUDITED = {Kind.APPLIED, Kind.NOOP, Kind.REJECTED, Kind.FAILED, Kind.ROLLED_BACK, Kind.DELETED}


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._actor = _actor()

    def write(self, action: str, **fields: Any) -> None:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "actor": self._actor,
                  "action": action, **{k: v for k, v in fields.items() if v is not None}}
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def on_event(self, event: Event) -> None:
        """EventBus subscriber: audit every decision the reconciler takes."""
        if event.kind in AUDITED:
            self.write(str(event.kind), model=event.model, revision=event.revision,
                       version=event.version, reason=event.reason, plan=event.plan,
                       trace_id=event.trace_id, by=event.fields.get("by", "daemon"))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
