"""etcd primitives the fleet needs beyond the source's: leases, leased puts, compare-and-swap
transactions and a prefix mirror, all through the source's JSON-gateway client
(sources/etcd_gateway.py: failover, auth, TLS), so no gRPC SDK is added.

Gateway facts this relies on (verified on etcd 3.4, /work/shared/notes/fleet.md):
* `lease/keepalive` answers once per request body (no held stream): one POST per renewal;
  a revoked or expired lease still answers HTTP 200, but without `TTL`;
* int64 fields are JSON strings; keys and values base64; a PUT event has no `type`;
* `count` ignores `max_create_revision`, so slot counting uses `len(kvs)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from watcher.core.errors import SourceError, SourceUnavailable
from watcher.sources.etcd_gateway import EtcdGateway
from watcher.sources.etcd_wire import KeyValue, b64, prefix_range_end


class Keys:
    """The fleet's key layout under one prefix, and the calls over it."""

    def __init__(self, gateway: EtcdGateway, root: str) -> None:
        self.gw = gateway
        self.root = root.encode()

    def key(self, *parts: str) -> bytes:
        return self.root + "/".join(parts).encode()

    # -- leases ------------------------------------------------------------------------
    async def grant(self, ttl: float) -> int:
        data = await self.gw.call("lease/grant", {"TTL": str(max(2, round(ttl)))})
        return int(data["ID"])

    async def renew(self, lease: int) -> int:
        """The lease's remaining TTL; 0 when it is gone (expired or revoked)."""
        data = await self.gw.call("lease/keepalive", {"ID": str(lease)})
        result = data.get("result", data)
        return int(result.get("TTL") or 0)

    async def revoke(self, lease: int) -> None:
        await self.gw.call("lease/revoke", {"ID": str(lease)})

    # -- keys --------------------------------------------------------------------------
    async def put(self, key: bytes, value: bytes, lease: int | None = None) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease is not None:
            body["lease"] = str(lease)
        data = await self.gw.call("kv/put", body)
        return int(data["header"]["revision"])

    async def delete(self, key: bytes) -> None:
        await self.gw.call("kv/deleterange", {"key": b64(key)})

    async def get(self, key: bytes) -> dict[str, Any] | None:
        """The raw kv (with create_revision), or None."""
        data = await self.gw.call("kv/range", {"key": b64(key)})
        kvs = data.get("kvs") or []
        return dict(kvs[0]) if kvs else None

    async def older(self, prefix: bytes, create_revision: int) -> tuple[int, int]:
        """How many keys under `prefix` were created before `create_revision`, and the
        revision of that answer."""
        data = await self.gw.call("kv/range", {
            "key": b64(prefix), "range_end": b64(prefix_range_end(prefix)), "keys_only": True,
            "max_create_revision": str(create_revision - 1)})
        return len(data.get("kvs") or []), int(data["header"]["revision"])

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> int | None:
        """Run `success` if every comparison holds; the revision after it, or None."""
        data = await self.gw.call("kv/txn", {"compare": compare, "success": success})
        if not data.get("succeeded", False):
            return None
        return int(data["header"]["revision"])

    # -- watching ----------------------------------------------------------------------
    async def mirror(self, prefix: bytes) -> AsyncIterator[dict[bytes, KeyValue]]:
        """Every key under `prefix` now, then again after each batch of changes. Raises
        SourceError when the stream breaks or was compacted (the caller re-reads)."""
        kvs, revision = await self.gw.range_prefix(prefix)
        state = {kv.key: kv for kv in kvs}
        yield dict(state)
        async with self.gw.watch(prefix, revision + 1) as stream:
            async for result in stream:
                if result.get("canceled"):
                    raise SourceError(f"etcd cancelled the watch on {prefix.decode()!r}: "
                                      f"{result.get('cancel_reason') or 'compacted'}")
                events = result.get("events") or []
                for event in events:
                    kv = KeyValue.from_json(event.get("kv", {}))
                    if event.get("type") == "DELETE":
                        state.pop(kv.key, None)
                    else:
                        state[kv.key] = kv
                if events:
                    yield dict(state)
        raise SourceUnavailable(f"the etcd watch on {prefix.decode()!r} ended")

    async def wait_deleted(self, prefix: bytes, after: int) -> None:
        """Return at the first delete under `prefix` after revision `after`."""
        async with self.gw.watch(prefix, after + 1) as stream:
            async for result in stream:
                if result.get("canceled"):
                    return  # compacted: the caller re-reads anyway
                if any(e.get("type") == "DELETE" for e in result.get("events") or []):
                    return
