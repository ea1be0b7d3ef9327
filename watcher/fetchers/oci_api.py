"""The registry HTTP API v2 for one registry: references, and basic or bearer-token auth.

Auth works as for images (Docker's token flow): the first 401 says how
(`WWW-Authenticate: Basic` or `Bearer realm=..,service=..`); basic credentials go on every
request, a bearer token is fetched from the realm (with the basic credentials, if any) per
repository scope and reused until it expires. The credentials come from `weights.credentials`
(matched by registry host) and, failing that, the docker runtime's `registry_auth`.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from watcher.core.errors import DocumentError
from watcher.fetchers.base import FetchFailed, http_failure
from watcher.fetchers.options import Credential

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::\d{{1,5}})?"
_REPO = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_REF = re.compile(rf"^oci://(?P<host>{_HOST})/(?P<repo>{_REPO})"
                  r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@sha256:(?P<digest>[0-9a-f]{64}))?$")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class OciRef:
    registry: str
    repository: str
    tag: str | None
    digest: str | None  # hex

    @classmethod
    def parse(cls, uri: str) -> OciRef:
        """`oci://host[:port]/repo[/more]:tag` or `...@sha256:<hex>`; DocumentError if not."""
        m = _REF.match(uri)
        if m is None or (m["tag"] is None and m["digest"] is None) or len(m["repo"]) > 255:
            raise DocumentError(f"model.uri {uri!r} is not oci://REGISTRY/REPOSITORY:TAG "
                                "or oci://REGISTRY/REPOSITORY@sha256:<64 hex>")
        return cls(m["host"], m["repo"], m["tag"], m["digest"])

    @property
    def reference(self) -> str:
        return f"sha256:{self.digest}" if self.digest else str(self.tag)

    def __str__(self) -> str:
        return f"oci://{self.registry}/{self.repository}" + (
            f"@sha256:{self.digest}" if self.digest else f":{self.tag}")


class RegistryClient:
    def __init__(self, host: str, http: httpx.AsyncClient, *, insecure: bool,
                 credential: Credential | None) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.http = http
        self.credential = credential
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    def _basic(self) -> tuple[str, str] | None:
        c = self.credential
        return (c.username, c.password.get_secret_value()) if c else None

    async def _learn(self) -> None:
        try:
            resp = await self.http.get(f"{self.base}/v2/")
        except httpx.TransportError as exc:
            raise FetchFailed(f"registry {self.host} unreachable: {exc}", retryable=True) from None
        header = resp.headers.get("WWW-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        self._challenge = (scheme if resp.status_code == 401 else "none",
                           dict(_CHALLENGE.findall(header)))

    async def authorization(self, repository: str, actions: str = "pull",
                            refresh: bool = False) -> dict[str, str]:
        """Headers that authorize `actions` on `repository` (empty when none are needed)."""
        if self._challenge is None or refresh:
            await self._learn()
        assert self._challenge is not None
        scheme, params = self._challenge
        if scheme == "basic":
            basic = self._basic()
            if basic is None:
                raise FetchFailed(f"registry {self.host} wants credentials; none configured "
                                  "(weights.credentials)", retryable=False, status=401)
            raw = f"{basic[0]}:{basic[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        if scheme == "bearer":
            return {"Authorization": f"Bearer {await self._token(repository, actions, params, refresh)}"}
        return {}

    async def _token(self, repository: str, actions: str, params: dict[str, str],
                     refresh: bool) -> str:
        scope = f"repository:{repository}:{actions}"
        cached = self._tokens.get(scope)
        if cached and not refresh and cached[1] > time.monotonic():
            return cached[0]
        realm = params.get("realm", "")
        if urlsplit(realm).scheme not in ("https", "http") or (
                urlsplit(realm).scheme == "http" and not self.base.startswith("http:")):
            raise FetchFailed(f"registry {self.host}: token realm {realm!r} refused (not https)",
                              retryable=False)
        query = {"scope": scope, **({"service": params["service"]} if "service" in params else {})}
        try:
            resp = await self.http.get(realm, params=query, auth=self._basic() or httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise FetchFailed(f"token service {realm} unreachable: {exc}", retryable=True) from None
        if resp.status_code != 200:
            raise http_failure(resp.status_code, f"token for {repository} from {realm}")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise FetchFailed(f"token service {realm} answered without a token", retryable=False)
        ttl = float(body.get("expires_in") or 60)
        self._tokens[scope] = (token, time.monotonic() + max(ttl - 30, 10))
        return token

    async def request(self, method: str, url: str, repository: str, *, actions: str = "pull",
                      headers: dict[str, str] | None = None, content: bytes | None = None,
                      params: dict[str, str] | None = None) -> httpx.Response:
        """One API call with auth; a 401 refreshes the credentials once. Transport errors
        become retryable FetchFailed; statuses are the caller's to judge."""
        if not url.startswith(("http://", "https://")):
            url = self.base + url
        for refresh in (False, True):
            auth = await self.authorization(repository, actions, refresh)
            try:
                resp = await self.http.request(method, url, headers={**(headers or {}), **auth},
                                               content=content, params=params)
            except httpx.TransportError as exc:
                raise FetchFailed(f"registry {self.host}: {type(exc).__name__}: {exc}",
                                  retryable=True) from None
            if resp.status_code != 401 or refresh:
                return resp
        raise AssertionError("unreachable")

