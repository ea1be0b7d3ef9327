"""An N-slot semaphore in etcd, bound to the member's lease (/work/shared/notes/fleet.md):

1. put `slots/<name>/<lease hex>` if it does not exist (a txn on create_revision 0), with
   the lease: the key's create_revision is the place in the queue;
2. the slot is held when fewer than `limit` keys under `slots/<name>/` were created before
   ours (a range with max_create_revision = ours - 1, counted with len(kvs): `count`
   ignores max_create_revision);
3. otherwise watch the prefix and count again after every delete.

Leaving deletes the key; a member that dies loses it with its lease (TTL), so its slot
passes on by itself. Waiting is fair (first come, first served) and costs one watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from watcher.core.errors import SourceError
from watcher.sources.etcd_wire import b64

if TYPE_CHECKING:
    from watcher.fleet.etcd import EtcdFleet

log = logging.getLogger("watcher.fleet.etcd")
#: while waiting, count again at least this often (a missed delete must not hang us)
RECOUNT = 5.0


@contextlib.asynccontextmanager
async def hold_slot(fleet: EtcdFleet, name: str, limit: int) -> AsyncIterator[None]:
    keys = fleet.keys
    prefix = keys.key("slots", name, "")
    key: bytes | None = None
    try:
        while True:
            lease = await fleet.wait_alive()
            key = prefix + f"{lease:x}".encode()
            mine = await _enter(fleet, key, lease)
            if mine is None:
                continue  # the lease went away meanwhile: queue again with the new one
            older, seen = await keys.older(prefix, mine)
            if older < limit:
                break
            log.info("%s: waiting for a restart slot (%d of %d taken before us)", name, older,
                     limit, extra={"model": name})
            with contextlib.suppress(TimeoutError, SourceError):
                async with asyncio.timeout(RECOUNT):
                    await keys.wait_deleted(prefix, seen)
        yield
    finally:
        if key is not None:
            await _leave(fleet, key)


async def _enter(fleet: EtcdFleet, key: bytes, lease: int) -> int | None:
    """Our key's create_revision (putting it if absent); None if it is not ours any more."""
    keys = fleet.keys
    revision = await keys.txn(
        [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        [{"request_put": {"key": b64(key), "value": b64(fleet.member_id), "lease": str(lease)}}])
    if revision is not None:
        return revision
    current = await keys.get(key)
    if current is None or int(current.get("lease", 0)) != lease:
        return None
    return int(current["create_revision"])


async def _leave(fleet: EtcdFleet, key: bytes) -> None:
    """Give the slot back; shielded (a cancelled apply still leaves). If etcd cannot be
    told, the lease's expiry frees the slot."""
    try:
        await asyncio.shield(fleet.keys.delete(key))
    except SourceError as exc:
        log.warning("could not give back restart slot %s (%s); it frees when the lease expires",
                    key.decode(), exc.reason)
