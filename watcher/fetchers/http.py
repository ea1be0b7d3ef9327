"""`https://...` / `http://...`: one weights file on an artifact server (nginx, Artifactory).

The document's `model.sha256` is the file's digest; the transfer verifies it while it
streams and resumes with `Range` + `If-Range` (the ETag is not content identity: nginx
derives it from mtime and size, so it only guards a resume, the sha256 decides). Basic
credentials come from `weights.credentials` by `host[:port]`; none in the URI itself.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

from watcher.core.errors import DocumentError
from watcher.fetchers.base import Artifact, Blob, Location, check_host, file_name
from watcher.fetchers.options import WeightsOptions


class HttpFetcher:
    def __init__(self, options: WeightsOptions) -> None:
        self.options = options

    @classmethod
    def create(cls, options: WeightsOptions, fallback: object = None) -> HttpFetcher:
        return cls(options)

    def _check(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DocumentError(f"model.uri {uri!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise DocumentError(f"model.uri {parts.scheme}://{parts.hostname}/...: credentials do not "
                                "belong in a document (use weights.credentials)")
        if any(c in uri for c in "\r\n\t ") or parts.fragment:
            raise DocumentError(f"model.uri {uri!r} has whitespace or a fragment")
        host = parts.netloc
        check_host(host, self.options.allowed_hosts, uri)
        return host

    async def resolve(self, uri: str, digest: str) -> Artifact:
        self._check(uri)
        return Artifact(digest, (Blob(digest, None, file_name(uri)),))

    async def locate(self, uri: str, blob: Blob, *, refresh: bool = False) -> Location:
        host = self._check(uri)
        cred = self.options.credential(host)
        headers: dict[str, str] = {}
        if cred is not None:
            raw = f"{cred.username}:{cred.password.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        return Location(uri, headers)

    async def aclose(self) -> None:
        return None
