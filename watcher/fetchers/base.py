"""The fetcher interface: what a scheme must say about an artifact, and where its bytes are.

A fetcher only answers; the stager (stage.py) owns caching, retries, progress and the
single download path (transfer.py), so every scheme gets resume, digest checks and the
same errors for free. Two calls:

    resolve(uri, digest) -> Artifact   the blobs behind the URI (OCI: reads and verifies the
                                        manifest; HTTP/S3: one blob, the document's digest)
    locate(uri, blob, refresh) -> Location
                                        a URL + headers for a ranged GET of one blob, with
                                        credentials (`refresh`: the last ones were refused)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit

from watcher.core.errors import DocumentError, FetchError

HEX = re.compile(r"^[0-9a-f]{64}$")
#: One path component of a file inside an artifact: no hidden tricks, no separators.
_COMPONENT = re.compile(r"^[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]{0,254}$")


class FetchFailed(FetchError):
    """One attempt failed. `retryable`: worth another try (5xx, connection cut, timeout).

    `status` is the HTTP status (0 when there was none)."""

    def __init__(self, message: str, *, retryable: bool, status: int = 0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class Blob:
    digest: str  # lowercase hex sha256 of the content
    size: int | None  # None: learnt from the response (HTTP, S3)
    name: str  # relative POSIX path of the file in the artifact's view


@dataclass(frozen=True)
class Artifact:
    """What the document's `sha256` names: one file, or a directory of files (OCI)."""

    digest: str
    blobs: tuple[Blob, ...]
    directory: bool = False
    #: The OCI manifest bytes; kept in the cache as blob `digest`, so that the artifact can
    #: be rebuilt (a rollback) without the registry.
    manifest: bytes | None = None


@dataclass(frozen=True)
class Location:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)  # may carry credentials: never log


class Fetcher(Protocol):
    async def resolve(self, uri: str, digest: str) -> Artifact: ...

    async def locate(self, uri: str, blob: Blob, *, refresh: bool = False) -> Location: ...

    async def aclose(self) -> None: ...


def safe_relpath(name: str, what: str) -> str:
    """`name` as a relative POSIX path that cannot leave its directory; DocumentError if not."""
    parts = name.split("/")
    if not name or len(name) > 1024 or not all(_COMPONENT.match(p) for p in parts):
        raise DocumentError(f"{what}: file name {name!r} is not a safe relative path")
    if any(p in (".", "..") for p in parts):
        raise DocumentError(f"{what}: file name {name!r} leaves its directory")
    return name


def file_name(uri: str, fallback: str = "weights") -> str:
    """The last path component of an http(s)/s3 URI, when it is a safe file name."""
    last = unquote(urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1])
    return last if _COMPONENT.match(last) else fallback


def check_host(host: str, allowed: tuple[str, ...], uri: str) -> None:
    """Refuse a host outside `weights.allowed_hosts` before any connection is made."""
    if allowed and host not in allowed and host.rsplit(":", 1)[0] not in allowed:
        raise DocumentError(f"model.uri {uri}: host {host} is not in weights.allowed_hosts")


def http_failure(status: int, what: str) -> FetchFailed:
    """The error for an HTTP status: 5xx/429/408 are worth a retry, other 4xx are not."""
    hints = {401: "credentials missing or refused (weights.credentials)",
             403: "access denied", 404: "not found", 416: "range not satisfiable"}
    retryable = status >= 500 or status in (408, 429)
    hint = hints.get(status, "server error" if status >= 500 else "refused")
    return FetchFailed(f"{what}: HTTP {status} ({hint})", retryable=retryable, status=status)
