"""A small etcd v3 client over etcd's JSON gRPC gateway (`/v3/...`), built on httpx.

Why not a gRPC SDK: see docs/etcd.md ("etcd client choice"). This module gives what the
source needs and nothing more: a consistent prefix range, put, a compare-and-swap txn, and
a streaming watch, with

* several endpoints and failover: a request that cannot reach one member (connection
  refused, timeout, "no leader", "request timed out") moves on to the next; the member that
  answered last is tried first next time;
* username/password auth with token refresh: on "invalid auth token" the client
  re-authenticates once and repeats the request;
* TLS with a CA, client certificate and key (an `ssl.SSLContext` handed to httpx).

Errors are translated here, at the boundary: SourceUnavailable when no member could answer,
SourceError for an answer that is a refusal (bad credentials, permission denied).
int64 fields arrive as JSON strings and keys/values as base64, as the gateway encodes them.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from watcher.core.errors import SourceUnavailable
from watcher.sources.etcd_wire import (
    _TRANSPORT_ERRORS,
    GatewayRefused,
    KeyValue,
    TokenExpired,
    _MemberDown,
    _not_json,
    b64,
    classify,
    prefix_range_end,
)

log = logging.getLogger("watcher.sources.etcd")



class EtcdGateway:
    """Talks to one etcd cluster through any of its members' JSON gateways."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float, username: str | None = None,
                 password: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._username = username
        self._password = password
        self._token: str | None = None
        self._timeout = timeout
        verify: ssl.SSLContext | bool = tls if tls is not None else True
        self._http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(timeout))

    @property
    def endpoint(self) -> str:
        """The member that answered last (tried first)."""
        return self.endpoints[self._current]

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    def _headers(self) -> dict[str, str]:
        # hasleader: a member cut off from its cluster refuses rather than serving stale data.
        headers = {"Grpc-Metadata-hasleader": "true"}
        if self._token:
            headers["Authorization"] = self._token
        return headers

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- unary calls -------------------------------------------------------------------

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `/v3/<path>` on the first member that answers; failover + re-auth."""
        problems: list[str] = []
        for index in self._order():
            base = self.endpoints[index]
            try:
                result = await self._call_authenticated(base, path, body)
            except _MemberDown as exc:
                problems.append(f"{base}: {exc}")
                log.debug("etcd %s unavailable for %s: %s", base, path, exc)
                continue
            self._current = index
            return result
        raise SourceUnavailable("etcd unreachable: no endpoint answered: " + "; ".join(problems))

    async def _call_authenticated(self, base: str, path: str,
                                  body: dict[str, Any]) -> dict[str, Any]:
        if self._username and self._token is None:
            await self._authenticate(base)
        try:
            return await self._post(base, path, body)
        except TokenExpired:
            if not self._username:
                raise GatewayRefused("etcd requires authentication; set source.username "
                                     "and source.password") from None
            log.info("etcd auth token expired; re-authenticating")
            await self._authenticate(base)
            return await self._post(base, path, body)

    async def _authenticate(self, base: str) -> None:
        self._token = None
        password = self._password or ""
        try:
            answer = await self._post(base, "auth/authenticate",
                                      {"name": self._username, "password": password})
        except TokenExpired as exc:  # "user name is empty" and the like
            raise GatewayRefused(f"etcd authentication failed: {exc}") from None
        except GatewayRefused as exc:
            raise GatewayRefused(f"etcd authentication failed for user "
                                 f"{self._username!r}: {exc}") from None
        self._token = str(answer.get("token", "")) or None

    async def _post(self, base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(f"{base}/v3/{path}", json=body,
                                             headers=self._headers())
        except _TRANSPORT_ERRORS as exc:
            raise _MemberDown(f"{type(exc).__name__}: {exc}" if str(exc)
                              else type(exc).__name__) from exc
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            raise _not_json(response) from None
        if response.status_code != 200 or "error" in data:
            message = str(data.get("message") or data.get("error") or response.status_code)
            raise classify(int(data.get("code", 0)), message)
        return data

    # -- the operations the source needs -----------------------------------------------

    async def range_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` at one revision (linearizable); returns (kvs, revision)."""
        data = await self.call("kv/range", {"key": b64(prefix),
                                            "range_end": b64(prefix_range_end(prefix))})
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
        return kvs, int(data["header"]["revision"])

    async def get(self, key: bytes) -> KeyValue | None:
        data = await self.call("kv/range", {"key": b64(key)})
        kvs = data.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    async def put(self, key: bytes, value: bytes) -> int:
        data = await self.call("kv/put", {"key": b64(key), "value": b64(value)})
        return int(data["header"]["revision"])

    async def put_if_mod_revision(self, key: bytes, value: bytes, mod_revision: int) -> int | None:
        """Put only if the key's mod_revision equals `mod_revision` (0: key absent).

        Returns the new revision, or None when the comparison failed.
        """
        data = await self.call("kv/txn", {
            "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        })
        if not data.get("succeeded", False):
            return None
        return int(data["header"]["revision"])

    @asynccontextmanager
    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[
            AsyncIterator[dict[str, Any]]]:
        """Open a watch stream on `prefix` from `start_revision` on the first member that takes it.

        Yields an iterator of watch responses (the gateway's `result` objects). The
        connection has no read timeout (a quiet prefix is normal); the caller checks
        liveness. Transport errors during the stream surface as SourceUnavailable.
        """
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix)),
                                   "start_revision": str(start_revision),
                                   "progress_notify": True}}
        if self._username and self._token is None:
            await self.call("maintenance/status", {})  # authenticates on a live member
        timeout = httpx.Timeout(self._timeout, read=None)
        problems: list[str] = []
        for index in self._order():
            base = self.endpoints[index]
            request = self._http.build_request("POST", f"{base}/v3/watch", json=body,
                                               headers=self._headers(), timeout=timeout)
            try:
                response = await self._http.send(request, stream=True)
            except _TRANSPORT_ERRORS as exc:
                problems.append(f"{base}: {type(exc).__name__} {exc}")
                continue
            try:
                if response.status_code != 200:
                    await response.aread()
                    problems.append(f"{base}: HTTP {response.status_code}")
                    continue
                self._current = index
                yield self._results(response)
                return
            finally:
                await response.aclose()
        raise SourceUnavailable("etcd unreachable: no endpoint accepted the watch: " + "; ".join(problems))

    async def _results(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError as exc:
                    raise SourceUnavailable(f"etcd watch stream: bad JSON line: {exc}") from None
                if "error" in message:
                    err = message["error"]
                    raise classify(int(err.get("grpc_code", 0)), str(err.get("message", err)))
                yield message.get("result", {})
        except _TRANSPORT_ERRORS as exc:
            raise SourceUnavailable(f"etcd unreachable: the watch stream broke: {type(exc).__name__} {exc}") from exc
        raise SourceUnavailable(f"etcd unreachable: the watch stream from {self.endpoint} ended")

    async def ping(self, base: str) -> None:
        """One cheap authenticated request to this member only (liveness of a watch)."""
        await self._call_authenticated(base, "maintenance/status", {})

    def demote(self, base: str) -> None:
        """This member failed us: prefer the next one from now on."""
        if self.endpoint == base and len(self.endpoints) > 1:
            self._current = (self._current + 1) % len(self.endpoints)

    async def authenticate_now(self) -> None:
        """Drop the token and authenticate again on a live member (after a refused watch)."""
        self._token = None
        if self._username:
            await self.call("maintenance/status", {})
