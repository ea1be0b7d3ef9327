"""The fleet on Nacos 3 (nacos-sdk-python 3, behind the same boundary as the source).

* **Liveness and reports:** one ephemeral instance per daemon in the naming service
  (`[fleet] service`, group `[fleet] group`), its gRPC connection being the heartbeat: a
  killed daemon is gone in about 0.6 s (measured), a frozen one after the server's timeout.
  The report is the instance's metadata (`r`: compact JSON; Nacos caps metadata at 1,024
  characters, member.py keeps within). The instance's "ip" is the member id (Nacos accepts
  a host name there; ephemeral instances are never probed), so many members may share a
  host. Every member subscribes to the service: the live list elects the leader.
* **Leadership:** the first live member in id order leads. Two members may briefly both
  believe it (a list pushed late); every record write is a compare-and-swap on the md5 the
  writer read (casMd5), so only one of them can move a rollout from any one state.
* **Records:** config `rollout.<model>.json` in the fleet group, CAS on its md5; the stream
  re-lists `rollout.*` every `discovery_interval` and listens to each.
* **Restart slots:** nacos_slots.py (a CAS-guarded record with expiries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from watcher.core.errors import SourceError, SourceUnavailable
from watcher.fleet.backend import Document, Stored
from watcher.fleet.nacos_configs import BoundedConfigs, raise_if_ours
from watcher.fleet.nacos_slots import hold_slot
from watcher.fleet.record import RolloutRecord
from watcher.fleet.report import MemberReport
from watcher.fleet.settings import FleetSettings
from watcher.sources.nacos_client import NacosClient
from watcher.sources.nacos_options import NacosOptions, content_md5
from watcher.sources.nacos_sdk import client_config

log = logging.getLogger("watcher.fleet.nacos")
PORT = 1  # the instance's port: unused (ephemeral instances are never probed)


def record_id(model: str) -> str:
    return f"rollout.{model}.json"


class NacosFleet:
    def __init__(self, fleet: FleetSettings, source: Mapping[str, Any], state_dir: Path) -> None:
        self.options = NacosOptions.model_validate({k: v for k, v in source.items() if k != "kind"})
        self.fleet = fleet
        self.member_id = fleet.member_id
        self.dir = state_dir / "fleet"
        self.configs = BoundedConfigs(NacosClient(
            self.options.model_copy(update={"group": fleet.group}), self.dir, log),
            self.options.timeout * 2)
        self._docs: BoundedConfigs | None = None
        self._naming: Any = None
        self._report = MemberReport(self.member_id, dict(fleet.labels))
        self._live: dict[str, MemberReport] | None = None
        self._changed = asyncio.Event()
        self._registered = False
        self._pushes: asyncio.Queue[str] = asyncio.Queue()
        self._listening: set[str] = set()

    # -- naming ------------------------------------------------------------------------
    async def _service(self) -> Any:
        if self._naming is None:
            from v2.nacos import NacosNamingService, SubscribeServiceParam

            await self.configs.check()  # reachable, credentials accepted
            config = client_config(self.options, self.dir / "naming")
            config.update_cache_when_empty = True  # an empty list is news (note B)
            config.load_cache_at_start = False
            naming = await NacosNamingService.create_naming_service(config)
            await naming.subscribe(SubscribeServiceParam(
                service_name=self.fleet.service, group_name=self.fleet.group,
                subscribe_callback=self._on_instances))
            self._naming = naming
        return self._naming

    async def _on_instances(self, instances: list[Any]) -> None:
        """The SDK's subscription callback: the live instances now (enqueue-only)."""
        live: dict[str, MemberReport] = {}
        for inst in instances:
            report = MemberReport.decode(str((inst.metadata or {}).get("r", "")))
            if report is not None and getattr(inst, "healthy", True):
                live[report.id] = report
        if self._live is None or set(live) != set(self._live):
            log.debug("fleet: live members now %s", sorted(live))
        self._live = live
        self._changed.set()

    def _param(self) -> Any:
        from v2.nacos import RegisterInstanceParam

        return RegisterInstanceParam(
            service_name=self.fleet.service, group_name=self.fleet.group, ip=self.member_id,
            port=PORT, ephemeral=True,
            metadata={"r": self._report.encode(limit=1000, first=self._rolling())})

    def _rolling(self) -> tuple[str, ...]:
        return tuple(m for m, r in self._report.models.items() if r.state != "serving")

    async def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """One naming call, bounded: after a server restart the SDK can leave a call waiting
        for ever (measured: a report stuck for minutes), so every call has the deadline."""
        try:
            async with asyncio.timeout(self.options.timeout * 2):
                return await call()
        except TimeoutError:
            raise SourceUnavailable(f"Nacos naming: {what} got no answer within "
                                    f"{self.options.timeout * 2:g}s") from None
        except asyncio.CancelledError:
            raise_if_ours()
            raise SourceUnavailable(f"Nacos naming: {what} was cancelled by the SDK") from None
        except Exception as exc:
            raise SourceUnavailable(f"Nacos naming: {what} failed: {exc}") from exc

    async def keep_alive(self, on_change: Callable[[bool], None]) -> None:
        was = False
        while True:
            try:
                naming = await self._service()
                healthy = bool(await self._call("health", naming.server_health))
                # Read the list too: after a server restart the SDK's subscription may stay
                # silent (measured), which would leave the leader with stale reports.
                await self.members()
                missing = self._live is not None and self.member_id not in self._live
                if not self._registered or missing:  # first time, or lost with the server
                    await self._register(naming)
                alive = healthy
            except SourceError as exc:
                log.debug("fleet: Nacos liveness: %s", exc.reason)
                alive = False
            if alive != was:
                was = alive
                on_change(alive)
            await asyncio.sleep(self.fleet.renew_interval if alive else 1.0)

    async def _register(self, naming: Any) -> None:
        await self._call("register", lambda: naming.register_instance(self._param()))
        self._registered = True

    async def report(self, report: MemberReport) -> None:
        self._report = report
        if self._registered:
            naming = await self._service()
            await self._call("update", lambda: naming.update_instance(self._param()))

    async def members(self) -> dict[str, MemberReport]:
        from v2.nacos import ListInstanceParam

        naming = await self._service()
        instances = await self._call("list", lambda: naming.list_instances(ListInstanceParam(
            service_name=self.fleet.service, group_name=self.fleet.group, healthy_only=True,
            subscribe=False)))
        await self._on_instances(instances)
        return dict(self._live or {})

    async def watch_members(self) -> AsyncIterator[dict[str, MemberReport]]:
        yield await self.members()
        while True:
            self._changed.clear()
            await self._changed.wait()
            yield dict(self._live or {})

    def live_ids(self) -> set[str] | None:
        return set(self._live) if self._live is not None else None

    # -- leadership ----------------------------------------------------------------------
    async def campaign(self) -> None:
        while not self.leading():
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.fleet.renew_interval)

    def leading(self) -> bool:
        live = self._live
        return bool(self._registered and live and self.member_id in live
                    and min(live) == self.member_id)

    # -- records -----------------------------------------------------------------------
    async def read_rollout(self, model: str) -> Stored | None:
        await self._listen(record_id(model))
        return _stored(await self.configs.get(record_id(model)))

    async def write_rollout(self, record: RolloutRecord, version: str | None, *,
                            fenced: bool = False) -> str | None:
        if fenced and not self.leading():
            return None
        data_id, text = record_id(record.model), record.encode().decode()
        if version is None:
            if await self.configs.get(data_id) is not None:
                return None
            await self.configs.publish(data_id, text)
            return content_md5(text)
        try:
            await self.configs.publish(data_id, text, cas_md5=version)
        except SourceUnavailable:
            raise
        except SourceError:
            current = await self.configs.get(data_id)
            if current is None or content_md5(current) != version:
                return None  # someone else wrote first
            raise
        return content_md5(text)

    async def _listen(self, data_id: str) -> None:
        if data_id not in self._listening:
            await self.configs.listen(data_id, self._on_push)
            self._listening.add(data_id)

    async def _on_push(self, tenant: str, group: str, data_id: str, content: str) -> None:
        self._pushes.put_nowait(data_id)

    async def watch_rollouts(self) -> AsyncIterator[dict[str, Stored]]:
        records: dict[str, Stored] = {}
        while True:
            ids = [d for d in await self.configs.list_data_ids() if d.startswith("rollout.")]
            for data_id in ids:
                await self._listen(data_id)
                stored = _stored(await self.configs.get(data_id))
                if stored is not None:
                    records[stored.record.model] = stored
            yield dict(records)
            loop = asyncio.get_running_loop()
            until = loop.time() + self.fleet.discovery_interval
            while (left := until - loop.time()) > 0:
                try:
                    data_id = await asyncio.wait_for(self._pushes.get(), left)
                except TimeoutError:
                    break
                stored = _stored(await self.configs.get(data_id))
                if stored is not None:
                    records[stored.record.model] = stored
                    yield dict(records)

    async def read_document(self, model: str) -> Document | None:
        if self._docs is None:
            self._docs = BoundedConfigs(NacosClient(self.options, self.dir / "documents", log),
                                        self.options.timeout * 2)
        content = await self._docs.get(self.options.data_id_for(model))
        return Document(content_md5(content), content.encode()) if content is not None else None

    # -- restart slots -------------------------------------------------------------------
    def slot(self, name: str, limit: int) -> AbstractAsyncContextManager[None]:
        return hold_slot(self, name, limit)

    async def aclose(self) -> None:
        naming, self._naming = self._naming, None
        if naming is not None:
            with contextlib.suppress(Exception):
                await naming.shutdown()
        for client in (self.configs, self._docs):
            if client is not None:
                await client.aclose()
        _drop_handlers("naming", self.dir)


def _stored(content: str | None) -> Stored | None:
    if content is None:
        return None
    try:
        return Stored(RolloutRecord.decode(content), content_md5(content))
    except ValueError as exc:
        log.error("fleet: ignoring a rollout record: %s", exc)
        return None


def _drop_handlers(name: str, root: Path) -> None:
    """The SDK adds a file handler to a module-global logger per client: remove ours."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if str(getattr(handler, "baseFilename", "")).startswith(str(root)):
            logger.removeHandler(handler)
            handler.close()
