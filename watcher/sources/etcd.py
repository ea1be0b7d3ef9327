"""etcd source and publisher: documents are the keys under a prefix, revision = mod_revision.

Watch contract (sources/base.Source):

* a session starts with one consistent range of the whole prefix at revision R, delivered as
  a `snapshot`, then watches from R + 1;
* after a disconnect it resumes from the last revision seen + 1 (no re-read), so nothing
  made while disconnected is missed and nothing is delivered twice;
* a watch the server cancels as compacted, and every `resync_interval`, ends the session:
  the next one starts with a fresh consistent range (a snapshot the reconciler diffs);
* outages: `connectivity(False)` once per outage (the reconciler logs the WARNING; this
  module logs the edge at INFO and each retry at DEBUG), reconnect with exponential backoff
  and jitter (tenacity), `connectivity(True)` on recovery. A broken stream that
  reconnects at once to another member is a failover, not an outage.

Publisher: `publish(name, content, if_revision=N)` is a txn comparing the key's mod_revision
with N ("0"/"" = must not exist); a mismatch raises ConflictError naming both revisions.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from watcher.core.errors import ConflictError, SettingsError, SourceError
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Change, Sink
from watcher.sources.etcd_gateway import EtcdGateway, KeyValue, TokenExpired
from watcher.sources.etcd_watch import WatchSession

log = logging.getLogger("watcher.sources.etcd")


class EtcdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoints: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:2379"], min_length=1,
                                 description="client URLs of the cluster's members")
    prefix: str = Field("/model-watcher/models/", min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = Field(None, description="PEM CA bundle for https endpoints")
    cert_file: str | None = Field(None, description="client certificate (PEM)")
    key_file: str | None = Field(None, description="client certificate's private key (PEM)")
    timeout: float = Field(5.0, gt=0, description="per request, and per connection attempt")
    resync_interval: float = Field(300.0, ge=0, description="periodic full re-read; 0 = off")
    keepalive_interval: float = Field(5.0, gt=0, description="liveness check of the watched member")
    max_backoff: float = Field(10.0, gt=0, description="cap of the reconnect backoff")

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must be an http:// or https:// URL")
        return value

    def tls(self) -> ssl.SSLContext | None:
        if not (self.ca_file or self.cert_file):
            return None
        if bool(self.cert_file) != bool(self.key_file):
            raise SettingsError("source.cert_file and source.key_file go together")
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file and self.key_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"source: cannot load TLS files: {exc}") from None
        return context


class _Resync(Exception):  # control flow, not an error
    """A healthy session ended on purpose or by a failover: start the next one at once."""


class EtcdSource:
    """Watches (and publishes) model documents under one etcd prefix."""

    name = "etcd"

    def __init__(self, options: EtcdOptions, logger: logging.Logger | None = None) -> None:
        self.options = options
        self.prefix = options.prefix.encode()
        self._log = logger or log
        password = options.password.get_secret_value() if options.password else None
        self.gateway = EtcdGateway(options.endpoints, timeout=options.timeout,
                                   username=options.username, password=password,
                                   tls=options.tls())
        self._up: bool | None = None
        self._down_since = 0.0
        #: Set by request_resync(); the watch session ends and re-reads in its own order.
        self.resync_requested = asyncio.Event()

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> EtcdSource:
        return cls(parse_options(EtcdOptions, options, "source"), ctx.logger.getChild("etcd"))

    # -- reading -------------------------------------------------------------------------

    def _name(self, key: bytes) -> str:
        return key[len(self.prefix):].decode("utf-8", errors="replace")

    def _change(self, kv: KeyValue, deleted: bool = False) -> Change:
        return Change(self._name(kv.key), str(kv.mod_revision), None if deleted else kv.value)

    async def read_consistent(self) -> tuple[dict[str, Change], int]:
        kvs, revision = await self.gateway.range_prefix(self.prefix)
        return {c.key: c for c in (self._change(kv) for kv in kvs)}, revision

    async def read_all(self) -> dict[str, Change]:
        changes, _ = await self.read_consistent()
        return changes

    # -- watching ------------------------------------------------------------------------

    async def watch(self, sink: Sink) -> None:
        session = WatchSession(self, sink)
        while True:
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(multiplier=0.2, max=self.options.max_backoff, jitter=0.5),
                retry=retry_if_exception_type(SourceError),
                before_sleep=lambda state: self._outage(sink, state),
                reraise=True,
            )
            try:
                await retrying(session.run)
            except _Resync:
                continue  # a fresh session at once; backoff starts over

    def _outage(self, sink: Sink, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        detail = f"etcd unreachable: {exc}" if exc else "etcd unreachable"
        if isinstance(exc, TokenExpired):
            detail = f"etcd refused the auth token: {exc}"
        if self._up is not False:
            self._up = False
            self._down_since = time.monotonic()
            # INFO: the reconciler logs the one WARNING per outage when told below
            self._log.info("%s (retrying with backoff)", detail)
            sink.connectivity(False, detail)
        else:
            self._log.debug("etcd still unreachable (attempt %d): %s", state.attempt_number, exc)

    def connected(self, sink: Sink) -> None:
        """A session reached the server: report recovery once."""
        if self._up is not True:
            if self._up is False:
                self._log.info("etcd reachable again at %s after %.1fs",
                                  self.gateway.endpoint, time.monotonic() - self._down_since)
            self._up = True
            sink.connectivity(True, f"etcd {self.gateway.endpoint}")

    def resync(self) -> None:
        raise _Resync

    def request_resync(self) -> None:
        """Re-read everything at the next moment the watch allows (webhook, operator)."""
        self.resync_requested.set()

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, key: str, content: bytes, *, if_revision: str | None = None) -> str:
        full = self.prefix + key.encode()
        if if_revision is None:
            return str(await self.gateway.put(full, content))
        expected = _parse_revision(if_revision)
        revision = await self.gateway.put_if_mod_revision(full, content, expected)
        if revision is not None:
            return str(revision)
        current = await self.gateway.get(full)
        found = f"is at revision {current.mod_revision}" if current else "does not exist"
        wanted = "to not exist yet" if expected == 0 else f"revision {expected}"
        raise ConflictError(f"{key!r} {found} in etcd, but --if-revision expected {wanted}: "
                            "someone else published meanwhile; re-read and retry")

    async def aclose(self) -> None:
        await self.gateway.aclose()


def _parse_revision(text: str) -> int:
    if text.strip() == "":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ConflictError(f"--if-revision {text!r} is not an etcd revision") from None
    if value < 0:
        raise ConflictError(f"--if-revision {text!r} must not be negative")
    return value
