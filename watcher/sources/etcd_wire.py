"""What etcd's JSON gateway sends and how its errors read: base64 keys and values, int64s as
strings, gRPC codes and messages mapped to the errors callers branch on (SourceUnavailable
when another member may answer, GatewayRefused when any would refuse, TokenExpired when a
re-authentication fixes it). Pure: no I/O; etcd_gateway.py does the talking."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from watcher.core.errors import SourceError, SourceUnavailable
from watcher.sources.base import SourceAuthError

# gRPC status codes the gateway reports in `code`.
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
#: Server-side messages that mean "this member cannot serve now; another one may".
_MEMBER_TROUBLE = ("no leader", "request timed out", "leader changed", "not capable",
                   "too many requests", "stopped", "timed out")
#: What a member we cannot talk to looks like. ssl.SSLError: with TLS 1.3 a refused client
#: certificate arrives as an alert on the first read, which httpx does not always wrap.
_TRANSPORT_ERRORS = (httpx.TransportError, ssl.SSLError, ConnectionError)
#: Messages that mean the token is missing or stale (a re-authentication fixes them).
_TOKEN_TROUBLE = ("invalid auth token", "user name is empty", "auth token")


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_range_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range that holds every key starting with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # etcd: "every key"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(unb64(kv.get("key")), unb64(kv.get("value")), int(kv.get("mod_revision", 0)))


class TokenExpired(SourceError):
    """Internal: the server refused the auth token; re-authenticate and repeat."""


class GatewayRefused(SourceAuthError):
    """The server answered with a refusal that another member would repeat."""


class _MemberDown(SourceUnavailable):
    """Internal: this member cannot serve now; try another."""


def classify(code: int, message: str) -> SourceError:
    """Map a gateway error (gRPC code + message) to the error the callers branch on."""
    low = message.lower()
    if code == _UNAUTHENTICATED or any(t in low for t in _TOKEN_TROUBLE):
        return TokenExpired(message)
    if code in (_UNAVAILABLE, _DEADLINE_EXCEEDED) or any(t in low for t in _MEMBER_TROUBLE):
        return _MemberDown(message)
    return GatewayRefused(message)


def _not_json(response: httpx.Response) -> SourceError:
    """A plain-text answer: a refusal by the gateway itself (4xx) or a sick member (5xx)."""
    text = response.text[:160].strip()
    if response.status_code >= 500:
        return _MemberDown(f"HTTP {response.status_code}: {text!r}")
    if "CommonName" in text:
        # etcd >= 3.4.10 refuses gateway requests whose client certificate has a CN while
        # auth is enabled (the CN would otherwise be ignored instead of used as the user)
        text += ("; with etcd auth enabled, use a client certificate without a CommonName "
                 "and authenticate with username/password")
    return GatewayRefused(f"etcd refused the request (HTTP {response.status_code}): {text}")
