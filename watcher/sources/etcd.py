"""etcd source and publisher: documents are the keys under a prefix, revision = mod_revision.

Fetching only (sources/base.py); the session retries, reports and re-reads:

* `snapshot()` is one consistent range of the whole prefix at revision R (the cursor);
* `changes(R)` watches from R + 1. An events batch moves the cursor to its highest
  mod_revision; a progress notification (sent only once the watcher has caught up) to its
  header revision. Resuming from the cursor after an outage misses nothing and repeats
  nothing (`resumable`);
* a watch the server cancels as compacted is `ResyncNeeded`; so is a refused auth token,
  after the client has authenticated again;
* a stream that breaks demotes its member, so the session's immediate reconnect goes to
  another one (a failover, not an outage); `check()` pings the watched member.

Publisher: `publish(name, content, if_revision=N)` is a txn comparing the key's mod_revision
with N ("0"/"" = must not exist); a mismatch raises ConflictError naming both revisions.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from watcher.core.errors import ConflictError, SettingsError, SourceError, SourceUnavailable
from watcher.observability.logs import register_secret
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Batch, Change, ResyncNeeded, SessionOptions, Snapshot
from watcher.sources.etcd_gateway import EtcdGateway
from watcher.sources.etcd_wire import KeyValue, TokenExpired

log = logging.getLogger("watcher.sources.etcd")


class EtcdOptions(SessionOptions):
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


class EtcdSource:
    """Reads, watches and publishes model documents under one etcd prefix."""

    name = "etcd"
    resumable: ClassVar[bool] = True

    def __init__(self, options: EtcdOptions) -> None:
        self.options = options
        self.prefix = options.prefix.encode()
        password = options.password.get_secret_value() if options.password else None
        if password:
            register_secret(password)  # masked in every log line
        self.gateway = EtcdGateway(options.endpoints, timeout=options.timeout,
                                   username=options.username, password=password,
                                   tls=options.tls())

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> EtcdSource:
        return cls(parse_options(EtcdOptions, options, "source"))

    def _change(self, kv: KeyValue, deleted: bool = False) -> Change:
        key = kv.key[len(self.prefix):].decode("utf-8", errors="replace")
        return Change(key, str(kv.mod_revision), None if deleted else kv.value)

    async def snapshot(self) -> Snapshot:
        kvs, revision = await self.gateway.range_prefix(self.prefix)
        return Snapshot({c.key: c for c in (self._change(kv) for kv in kvs)}, revision)

    async def changes(self, cursor: int) -> AsyncIterator[Batch]:
        async with self.gateway.watch(self.prefix, cursor + 1) as stream:
            member = self.gateway.endpoint
            try:
                async for result in stream:
                    batch = self._batch(result, cursor)
                    cursor = batch.cursor
                    yield batch
            except ResyncNeeded:
                raise
            except TokenExpired as exc:
                await self.gateway.authenticate_now()
                raise ResyncNeeded(f"etcd refused the auth token ({exc})") from exc
            except SourceError:
                self.gateway.demote(member)  # the session's reconnect tries another member
                raise

    def _batch(self, result: dict[str, Any], cursor: int) -> Batch:
        if result.get("canceled"):
            _canceled(result)
        events = result.get("events") or []
        changes = [self._change(KeyValue.from_json(e.get("kv", {})), e.get("type") == "DELETE")
                   for e in events]
        return Batch(changes, max(cursor, self._cursor_after(result)))

    @staticmethod
    def _cursor_after(result: dict[str, Any]) -> int:
        if result.get("created"):
            return 0
        events = result.get("events") or []
        if not events:  # progress notification: everything up to the header is delivered
            return int(result.get("header", {}).get("revision", 0))
        return max(int(e.get("kv", {}).get("mod_revision", 0)) for e in events)

    async def check(self) -> None:
        """Ping the member the watch is on; one that stopped answering (a SIGSTOPped or
        partitioned process keeps its TCP connection open) is demoted, so the session's
        reconnect goes elsewhere."""
        member = self.gateway.endpoint
        try:
            await self.gateway.ping(member)
        except SourceError as exc:
            self.gateway.demote(member)
            raise SourceUnavailable(f"etcd unreachable: member {member} stopped answering: {exc}") from exc

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


def _canceled(result: dict[str, Any]) -> None:
    """The server cancelled the watch: compaction (re-read) or a refusal (an outage)."""
    compact = int(result.get("compact_revision", 0) or 0)
    reason = str(result.get("cancel_reason", "")) or "no reason given"
    if compact:
        raise ResyncNeeded(f"etcd compacted past the watched revision (now {compact})")
    if "Unauthenticated" in reason or "auth token" in reason or "user name is empty" in reason:
        raise TokenExpired(reason)
    raise SourceError(f"etcd refused the watch: {reason}")


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
