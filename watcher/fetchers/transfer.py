"""One blob over HTTP(S) into a partial file: ranged resume, streamed sha256, fsync.

Blocking `http.client` in a worker thread, reading 1 MiB at a time into one reused buffer:
measured on loopback (bench/weights.py, docs/performance.md) this keeps up with `curl`,
whereas httpx's stream hands out 64 KiB pieces through the event loop at a fraction of
that. Memory stays flat whatever the size: one buffer, nothing accumulated.

Resume: a partial file grows across attempts, restarts of the daemon and network cuts.
The next attempt asks for `Range: bytes=<have>-` guarded by `If-Range: <validator>` (the
strong ETag or Last-Modified the server gave before, kept in a `.json` beside the
partial), and accepts only a 206 whose Content-Range starts at `<have>`; a 200 means the
server sends everything again (the content changed, or it ignores ranges): start over.
It never asks at or past the end (docker-registry answers a 416 with a bogus length).
The sha256 covers the prefix already on disk (re-read once) and then the stream; the
result must equal the digest the manifest/document names, else the partial is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from watcher.core.errors import VerificationError
from watcher.fetchers.base import FetchFailed, Location, http_failure

CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Stopped(Exception):
    """The transfer was cancelled (shutdown, or the apply was abandoned)."""


class Cancel:
    """Stops a transfer from another thread, also out of a blocking read."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
        if self.event.is_set():
            self.cancel()

    def cancel(self) -> None:
        self.event.set()
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    ssl_context: ssl.SSLContext | None = None


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _load_meta(part: Path) -> dict[str, object]:
    try:
        data = json.loads(_meta_path(part).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def discard(part: Path) -> None:
    """Remove a partial and its resume record."""
    for p in (part, _meta_path(part)):
        p.unlink(missing_ok=True)


class _Sum:
    """The running sha256 of the partial, replaced when the server starts over."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()


def _hash_prefix(part: Path, cancel: Cancel) -> tuple[_Sum, int]:
    s = _Sum()
    h = s.hasher
    have = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    if part.exists():
        with part.open("rb", buffering=0) as f:
            while n := f.readinto(view):
                if cancel.event.is_set():
                    raise Stopped
                h.update(view[:n])
                have += n
    return s, have


def _connect(url: str, limits: Limits, cancel: Cancel) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchFailed(f"cannot fetch from {parts.scheme}://{parts.hostname}", retryable=False)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = limits.ssl_context or ssl.create_default_context()
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=limits.connect_timeout,
                                           context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=limits.connect_timeout)
    conn.connect()
    assert conn.sock is not None
    conn.sock.settimeout(limits.read_timeout)
    cancel.attach(conn.sock)
    return conn


def _request(loc: Location, headers: dict[str, str], limits: Limits,
             cancel: Cancel) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET following redirects; credentials are dropped when a redirect changes host."""
    url, hdrs = loc.url, dict(headers)
    for _ in range(MAX_REDIRECTS + 1):
        conn = _connect(url, limits, cancel)
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target or "/", headers=hdrs)
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            new = urljoin(url, resp.getheader("Location", ""))
            conn.close()
            if urlsplit(new).netloc != parts.netloc:
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            url = new
            continue
        return conn, resp
    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects", retryable=False)


def download(loc: Location, part: Path, *, digest: str, size: int | None, what: str,
             limits: Limits, cancel: Cancel, on_bytes: Callable[[int], None],
             reserve: Callable[[int], None]) -> None:
    """Make `part` hold the whole blob `digest`, fsynced; resume what is already there.

    Raises FetchFailed (`retryable` says whether the partial is worth another attempt),
    VerificationError (digest or size mismatch; the partial is deleted), Stopped.
    `reserve(n)` is asked for room for the n bytes still to come (the cache quota).
    """
    if size is not None and part.exists() and part.stat().st_size > size:
        discard(part)
    running, have = _hash_prefix(part, cancel)
    total = size
    if size is None or have < size:
        total = _fetch(loc, part, running, have, size, what, limits, cancel, on_bytes, reserve)
    final = part.stat().st_size if part.exists() else 0
    if total is not None and final != total:
        raise FetchFailed(f"{what}: transfer ended at {final} of {total} bytes", retryable=True)
    actual = running.hasher.hexdigest()
    if actual != digest:
        discard(part)
        raise VerificationError(
            f"{what}: content hashed to sha256 {actual[:12]}..., expected {digest[:12]}... "
            "(tampered, truncated or another file)")


def _fetch(loc: Location, part: Path, running: _Sum, have: int, size: int | None,
           what: str, limits: Limits, cancel: Cancel, on_bytes: Callable[[int], None],
           reserve: Callable[[int], None]) -> int | None:
    meta = _load_meta(part)
    headers = dict(loc.headers)
    if have:
        headers["Range"] = f"bytes={have}-"
        if isinstance(meta.get("validator"), str):
            headers["If-Range"] = str(meta["validator"])
    try:
        conn, resp = _request(loc, headers, limits, cancel)
    except (OSError, http.client.HTTPException) as exc:
        if cancel.event.is_set():
            raise Stopped from None
        raise FetchFailed(f"{what}: cannot connect: {exc}", retryable=True) from None
    try:
        total, offset = _accept(resp, have, size, what)
        if offset == 0 and have:  # the server sends everything again: start over
            running.hasher = hashlib.sha256()
            part.write_bytes(b"")
        validator = resp.getheader("ETag") or resp.getheader("Last-Modified")
        if validator and validator.startswith("W/"):
            validator = None
        part.parent.mkdir(parents=True, exist_ok=True)
        _meta_path(part).write_text(json.dumps({"validator": validator, "total": total}))
        if total is not None:
            reserve(total - offset)
        _stream(resp, part, running, what, cancel, on_bytes)
        return total
    finally:
        cancel.attach(None)
        conn.close()


def _accept(resp: http.client.HTTPResponse, have: int, size: int | None,
            what: str) -> tuple[int | None, int]:
    """(total size, offset the body starts at) for an acceptable response; else raise."""
    if resp.status == 206 and have:
        m = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
        if m is None or int(m[1]) != have:
            raise FetchFailed(f"{what}: server resumed at {m[1] if m else '?'}, not {have}",
                              retryable=True)
        total = None if m[3] == "*" else int(m[3])
    elif resp.status == 200:
        length = resp.getheader("Content-Length")
        total = int(length) if length and length.isdigit() else None
        have = 0
    else:
        raise http_failure(resp.status, what)  # 416 included: the caller never asks past EOF
    if size is not None and total is not None and total != size:
        raise VerificationError(f"{what}: server has {total} bytes, the manifest says {size}")
    return total, have


def _stream(resp: http.client.HTTPResponse, part: Path, running: _Sum, what: str,
            cancel: Cancel, on_bytes: Callable[[int], None]) -> None:
    hasher = running.hasher
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with part.open("ab", buffering=0) as f:
        try:
            while True:
                if cancel.event.is_set():
                    raise Stopped
                try:
                    n = resp.readinto(view)
                except (OSError, http.client.HTTPException) as exc:
                    if cancel.event.is_set():
                        raise Stopped from None
                    raise FetchFailed(f"{what}: connection lost ({type(exc).__name__}: {exc})",
                                      retryable=True) from None
                if not n:
                    break
                hasher.update(view[:n])
                _write(f, view[:n], what)
                on_bytes(n)
        finally:
            with contextlib.suppress(OSError):
                os.fsync(f.fileno())


def _write(f: io.FileIO, data: memoryview, what: str) -> None:
    try:
        f.write(data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FetchFailed(f"{what}: disk full while writing the weights ({exc.strerror})",
                              retryable=False) from None
        raise FetchFailed(f"{what}: cannot write the weights ({exc.strerror})",
                          retryable=False) from None
