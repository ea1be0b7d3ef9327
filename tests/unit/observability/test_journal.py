"""The native journal protocol encoder and the record -> fields mapping (a real unix
datagram socket stands in for journald's; the real journald is in
tests/integration/systemd/test_service.py)."""

from __future__ import annotations

import logging
import os
import socket
import struct
from pathlib import Path

from watcher.observability import journal
from watcher.observability.logs import register_secret


def test_encode_plain_and_binary_values() -> None:
    data = journal.encode({"MESSAGE": "one line", "EXC": "two\nlines"})
    assert data.startswith(b"MESSAGE=one line\n")
    rest = data[len(b"MESSAGE=one line\n"):]
    assert rest[:4] == b"EXC\n"
    (length,) = struct.unpack("<Q", rest[4:12])
    assert rest[12:12 + length] == b"two\nlines" and rest[12 + length:] == b"\n"


def test_handler_sends_fields_priority_and_redacts(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    register_secret("hunter2-secret-value")
    handler = journal.JournalHandler(address=str(path))
    logger = logging.getLogger("test.journal")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("demo failed with hunter2-secret-value", extra={"model": "demo", "revision": "r7"})
        data = server.recv(65536)
    finally:
        logger.removeHandler(handler)
        handler.close()
        server.close()
    fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
    assert fields["PRIORITY"] == "3" and fields["MODEL"] == "demo" and fields["REVISION"] == "r7"
    assert fields["MESSAGE"] == "demo failed with ***"
    assert fields["LOGGER"] == "test.journal" and fields["SYSLOG_IDENTIFIER"] == "model-watcher"


def test_without_journald_the_record_goes_to_stderr(tmp_path: Path, capsys: object) -> None:
    handler = journal.JournalHandler(address=str(tmp_path / "absent.sock"))
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "kept %s", ("anyway",), None)
    handler.emit(record)
    handler.close()
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert '"event": "kept anyway"' in err and '"level": "WARNING"' in err


def test_stderr_is_journal_compares_device_and_inode() -> None:
    st = os.fstat(2)
    assert journal.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not journal.stderr_is_journal({"JOURNAL_STREAM": "1:2"})
    assert not journal.stderr_is_journal({})
