"""A restart semaphore on Nacos, which has no lease-bound keys and no usable lock API
(3.1's lock module answered "RequestHandler Not Found"; /work/shared/notes/fleet.md):

    config slots.<name>.json = {"holders": {member: expires_at}, "gen": n}

* take: read it (and its md5), drop holders whose time ran out or whose instance left the
  naming service (a killed daemon is gone there in about 0.6 s), and if fewer than `limit`
  remain, add ourselves with `now + ttl` and write with casMd5 = the md5 read. A lost race
  (someone wrote in between) reads again; a full set waits (a push, or 0.5 s) and reads
  again;
* hold: every ttl/3 the expiry is pushed forward (CAS), so a frozen holder's slot frees
  after its ttl even though its instance may linger;
* give back: remove ourselves (CAS).

Nacos's CAS on a config that does not exist creates it, so the record is created first with
no holders and no CAS: creators race harmlessly (they all write the same bytes). Expiries are
wall-clock times: members' clocks must agree to well within the TTL (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from watcher.core.errors import SourceError
from watcher.sources.nacos_options import content_md5

if TYPE_CHECKING:
    from watcher.fleet.nacos import NacosFleet

log = logging.getLogger("watcher.fleet.nacos")
EMPTY = '{"gen":0,"holders":{}}'
POLL = 0.5


class _Lost(SourceError):
    """Internal: the CAS write lost a race; read again."""


@contextlib.asynccontextmanager
async def hold_slot(fleet: NacosFleet, name: str, limit: int) -> AsyncIterator[None]:
    data_id = f"slots.{name}.json"
    ttl = fleet.fleet.ttl
    while True:  # a full set: read again shortly (holders leave, or their time runs out)
        if await _update(fleet, data_id, lambda h: _take(h, fleet, limit, ttl)):
            break
        await asyncio.sleep(POLL)
    renew = asyncio.ensure_future(_renew(fleet, data_id, ttl))
    try:
        yield
    finally:
        renew.cancel()
        await asyncio.gather(renew, return_exceptions=True)
        try:
            await asyncio.shield(_update(fleet, data_id, lambda h: _drop(h, fleet.member_id)))
        except SourceError as exc:
            log.warning("could not give back restart slot %s (%s); it frees after %gs", name,
                        exc.reason, ttl)


def _take(holders: dict[str, float], fleet: NacosFleet, limit: int, ttl: float) -> bool:
    now = time.time()
    live = fleet.live_ids()
    for member, until in list(holders.items()):
        if until <= now or (live is not None and member not in live and member != fleet.member_id):
            del holders[member]
    if fleet.member_id not in holders and len(holders) >= limit:
        return False
    holders[fleet.member_id] = now + ttl
    return True


def _drop(holders: dict[str, float], member: str) -> bool:
    return holders.pop(member, None) is not None


async def _renew(fleet: NacosFleet, data_id: str, ttl: float) -> None:
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            await _update(fleet, data_id, lambda h: _extend(h, fleet.member_id, ttl))
        except SourceError as exc:
            log.warning("restart slot %s: could not extend it: %s", data_id, exc.reason)


def _extend(holders: dict[str, float], member: str, ttl: float) -> bool:
    holders[member] = time.time() + ttl
    return True


async def _update(fleet: NacosFleet, data_id: str, change: Any) -> bool:
    """Apply `change(holders) -> bool` with CAS, re-reading after a lost race. Returns what
    `change` said (False: nothing to write)."""
    retrying = AsyncRetrying(retry=retry_if_exception_type(_Lost), wait=wait_random(0.02, 0.2),
                             stop=stop_after_attempt(50), reraise=True)
    async for attempt in retrying:
        with attempt:
            content = await fleet.configs.get(data_id)
            if content is None:
                await fleet.configs.publish(data_id, EMPTY)
                raise _Lost("created")
            data = json.loads(content)
            holders = {str(k): float(v) for k, v in dict(data.get("holders") or {}).items()}
            if not change(holders):
                return False
            text = json.dumps({"gen": int(data.get("gen", 0)) + 1, "holders": holders},
                              sort_keys=True, separators=(",", ":"))
            try:
                await fleet.configs.publish(data_id, text, cas_md5=content_md5(content))
            except SourceError as exc:
                if type(exc) is SourceError:  # refused: the md5 moved on
                    raise _Lost(exc.reason) from exc
                raise
    return True
