"""Log records as native journald entries: `journalctl -o json` gets MODEL, REVISION, PRIORITY.

Why not JSON lines on stderr, as elsewhere: journald stores a line of a service's stderr as
one MESSAGE with the unit's default priority (6, info) for every line, so an ERROR is not
`journalctl -p err` and nothing of ours is a field a query can select on
(`journalctl MODEL=qwen-chat`). The native protocol is small enough to speak directly
(https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram of `KEY=value` lines to
/run/systemd/journal/socket, a value holding a newline in the binary form
`KEY\\n<64-bit little-endian length><value>\\n`. (The python-systemd binding would need a C
build against libsystemd; this is 40 lines.)

Fields: MESSAGE (the human text, redacted; a traceback appended), PRIORITY (syslog level
from the log level), SYSLOG_IDENTIFIER, LOGGER, CODE_FILE/CODE_LINE/CODE_FUNC, and MODEL,
REVISION, VERSION, REASON, PLAN, TRACE_ID, SOURCE, OUTCOME where the call passes them.
A datagram that cannot be sent (no journald, too large) is written to stderr as a JSON
line instead, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping

from watcher.observability.logs import STABLE_KEYS, JsonFormatter, redact

SOCKET = "/run/systemd/journal/socket"
#: A datagram stays well below the socket's default buffer (about 208 KiB).
MAX_MESSAGE = 48 * 1024
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}


def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """True when systemd connected stderr to the journal ($JOURNAL_STREAM = "dev:inode")."""
    value = (env if env is not None else os.environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def encode(fields: Mapping[str, str]) -> bytes:
    """The native protocol's datagram for `fields` (keys: upper-case letters, digits, _)."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def fields_of(record: logging.LogRecord, identifier: str, formatter: logging.Formatter) -> dict[str, str]:
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + formatter.formatException(record.exc_info)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " [truncated]"
    fields = {
        "MESSAGE": redact(message),
        "PRIORITY": str(PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)),
        "SYSLOG_IDENTIFIER": identifier,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname or "",
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName or "",
    }
    for key in STABLE_KEYS:
        value = getattr(record, key, None)
        if value is not None:
            fields[key.upper()] = redact(str(value))
    return fields


class JournalHandler(logging.Handler):
    """Sends each record to journald natively; falls back to a JSON line on stderr."""

    def __init__(self, identifier: str = "model-watcher", address: str = SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.fallback = logging.StreamHandler(sys.stderr)
        self.fallback.setFormatter(JsonFormatter())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = fields_of(record, self.identifier, self.formatter or JsonFormatter())
            self.sock.sendto(encode(fields), self.address)
        except OSError:
            self.fallback.emit(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()
