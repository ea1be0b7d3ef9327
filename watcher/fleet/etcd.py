"""The fleet on etcd: one lease per daemon carries its report, its controller leadership and
its restart slots, so a daemon that dies (SIGKILL, power) drops all three when the lease
expires (TTL; the expiry reaches watchers about 0.5 s later).

    <prefix>members/<member>          the member's report (JSON), leased
    <prefix>rollouts/<model>          the rollout record; CAS on its mod_revision
    <prefix>leader                    the controller's member id, leased (put-if-absent)
    <prefix>slots/<model>/<lease hex> a restart slot taken or waited for (etcd_slots.py)

Liveness (`keep_alive`): grant, then one keepalive every TTL/3. A renewal that finds the
lease gone (an answer without TTL) grants a new one and puts the report back. A member that
could not renew for TTL - 1 s considers itself dead ("self-fenced"): it stops leading, so a
partitioned leader cannot write after another one took over; its writes are fenced anyway:
a controller's write is a transaction that also compares the leader key's create_revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from watcher.core.errors import SourceError
from watcher.fleet.backend import Document, Stored
from watcher.fleet.etcd_keys import Keys
from watcher.fleet.etcd_slots import hold_slot
from watcher.fleet.record import RolloutRecord
from watcher.fleet.report import MemberReport
from watcher.fleet.settings import FleetSettings
from watcher.sources.etcd import EtcdOptions
from watcher.sources.etcd_gateway import EtcdGateway
from watcher.sources.etcd_wire import b64

log = logging.getLogger("watcher.fleet.etcd")


class EtcdFleet:
    """FleetBackend over the source's etcd (same endpoints, credentials and TLS)."""

    def __init__(self, fleet: FleetSettings, source: Mapping[str, Any]) -> None:
        options = EtcdOptions.model_validate({k: v for k, v in source.items() if k != "kind"})
        password = options.password.get_secret_value() if options.password else None
        self.gateway = EtcdGateway(options.endpoints, timeout=options.timeout,
                                   username=options.username, password=password,
                                   tls=options.tls())
        self.keys = Keys(self.gateway, fleet.prefix)
        self.docs = options.prefix.encode()
        self.fleet = fleet
        self.member_id = fleet.member_id
        self.lease: int | None = None
        self._renewed = float("-inf")
        self._report: MemberReport | None = None
        self._report_lock = asyncio.Lock()
        self._granted = asyncio.Event()
        self._leader: tuple[int, int] | None = None  # (lease, create_revision of our key)

    # -- liveness ----------------------------------------------------------------------
    def alive(self) -> bool:
        """Renewed within TTL - 1 s (else we must assume the lease is gone)."""
        return self.lease is not None and time.monotonic() - self._renewed < self.fleet.ttl - 1

    async def keep_alive(self, on_change: Callable[[bool], None]) -> None:
        was = False
        while True:
            try:
                if self.lease is None or await self.keys.renew(self.lease) <= 0:
                    await self._grant()
                self._renewed = time.monotonic()
            except SourceError as exc:
                log.debug("fleet lease renewal failed: %s", exc.reason)
            now = self.alive()
            if now != was:
                was = now
                on_change(now)
            await asyncio.sleep(self.fleet.renew_interval if now else 0.5)

    async def _grant(self) -> None:
        if self.lease is not None:
            log.warning("fleet: lease %x of member %s expired; joining again", self.lease,
                        self.member_id)
        self._granted.clear()
        self.lease, self._leader = None, None
        lease = await self.keys.grant(self.fleet.ttl)
        self.lease = lease
        self._renewed = time.monotonic()
        await self._put_report()
        self._granted.set()

    async def wait_alive(self) -> int:
        while not self.alive():
            await self._granted.wait()
            if not self.alive():
                await asyncio.sleep(0.2)
        assert self.lease is not None
        return self.lease

    # -- reports -----------------------------------------------------------------------
    async def report(self, report: MemberReport) -> None:
        self._report = report
        await self._put_report()

    async def _put_report(self) -> None:
        async with self._report_lock:  # the newest report wins, never an older one last
            if self._report is not None and self.lease is not None:
                await self.keys.put(self.keys.key("members", self.member_id),
                                    self._report.encode().encode(), self.lease)

    async def members(self) -> dict[str, MemberReport]:
        kvs, _ = await self.gateway.range_prefix(self.keys.key("members", ""))
        return _reports(kv.value for kv in kvs)

    async def watch_members(self) -> AsyncIterator[dict[str, MemberReport]]:
        decoded: dict[bytes, tuple[int, MemberReport | None]] = {}  # only changed keys decode
        async for state in self.keys.mirror(self.keys.key("members", "")):
            reports: dict[str, MemberReport] = {}
            for key, kv in state.items():
                cached = decoded.get(key)
                if cached is None or cached[0] != kv.mod_revision:
                    cached = (kv.mod_revision, _report(kv.value))
                    decoded[key] = cached
                if cached[1] is not None:
                    reports[cached[1].id] = cached[1]
            for gone in set(decoded) - set(state):
                del decoded[gone]
            yield reports

    # -- rollout records -----------------------------------------------------------------
    async def read_rollout(self, model: str) -> Stored | None:
        raw = await self.keys.get(self.keys.key("rollouts", model))
        return _stored(raw["value"], raw["mod_revision"]) if raw else None

    async def write_rollout(self, record: RolloutRecord, version: str | None, *,
                            fenced: bool = False) -> str | None:
        key = self.keys.key("rollouts", record.model)
        compare = [{"key": b64(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": version or "0"}]
        if fenced:
            if self._leader is None or not self.leading():
                return None
            compare.append({"key": b64(self.keys.key("leader")), "target": "CREATE",
                            "result": "EQUAL", "create_revision": str(self._leader[1])})
        revision = await self.keys.txn(compare, [{"request_put": {
            "key": b64(key), "value": b64(record.encode())}}])
        return None if revision is None else str(revision)

    async def watch_rollouts(self) -> AsyncIterator[dict[str, Stored]]:
        async for state in self.keys.mirror(self.keys.key("rollouts", "")):
            out: dict[str, Stored] = {}
            for kv in state.values():
                stored = _stored(b64(kv.value), kv.mod_revision)
                if stored is not None:
                    out[stored.record.model] = stored
            yield out

    async def read_document(self, model: str) -> Document | None:
        kv = await self.gateway.get(self.docs + model.encode())
        return Document(str(kv.mod_revision), kv.value) if kv else None

    # -- leadership ----------------------------------------------------------------------
    async def campaign(self) -> None:
        key = self.keys.key("leader")
        while True:
            lease = await self.wait_alive()
            revision = await self.keys.txn(
                [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                [{"request_put": {"key": b64(key), "value": b64(self.member_id),
                                  "lease": str(lease)}}])
            if revision is not None:
                self._leader = (lease, revision)
                return
            current = await self.keys.get(key)
            if current is None:
                continue
            if int(current.get("lease", 0)) == lease:  # ours from before (same lease)
                self._leader = (lease, int(current["create_revision"]))
                return
            with contextlib.suppress(TimeoutError):  # re-check now and then
                async with asyncio.timeout(self.fleet.ttl * 3):
                    await self.keys.wait_deleted(key, int(current["mod_revision"]))

    def leading(self) -> bool:
        return self._leader is not None and self._leader[0] == self.lease and self.alive()

    # -- restart slots -------------------------------------------------------------------
    def slot(self, name: str, limit: int) -> AbstractAsyncContextManager[None]:
        return hold_slot(self, name, limit)

    async def aclose(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:  # leave at once instead of after the TTL (a clean stop)
            try:
                async for attempt in AsyncRetrying(
                        retry=retry_if_exception_type(SourceError), reraise=True,
                        wait=wait_exponential_jitter(0.1, max=0.5), stop=stop_after_delay(2.0)):
                    with attempt:
                        await self.keys.revoke(lease)
            except SourceError as exc:
                log.info("fleet: could not revoke lease %x (%s); it expires by itself", lease,
                         exc.reason)
        await self.gateway.aclose()


def _reports(values: Iterable[bytes]) -> dict[str, MemberReport]:
    reports = (_report(value) for value in values)
    return {r.id: r for r in reports if r is not None}


def _report(value: bytes) -> MemberReport | None:
    report = MemberReport.decode(value)
    if report is None:
        log.warning("fleet: ignoring a member key that holds no report")
    return report


def _stored(value_b64: str, mod_revision: object) -> Stored | None:
    import base64

    try:
        record = RolloutRecord.decode(base64.b64decode(value_b64))
    except ValueError as exc:
        log.error("fleet: ignoring a rollout record: %s", exc)
        return None
    return Stored(record, str(mod_revision))
