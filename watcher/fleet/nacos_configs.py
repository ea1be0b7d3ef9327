"""The source's Nacos config client with a deadline on every call, for the fleet's records
and restart slots: after a server restart nacos-sdk-python can leave a call waiting for ever
(measured: a member's report stuck for minutes), and a fleet loop must never hang on one.
A call past its deadline is SourceUnavailable (retried with backoff by the caller)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from watcher.core.errors import SourceUnavailable
from watcher.sources.nacos_client import NacosClient


class BoundedConfigs:
    """The source's config client with a deadline on every call (see `NacosFleet._call`)."""

    def __init__(self, client: NacosClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def _bounded(self, what: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise SourceUnavailable(f"Nacos: {what} got no answer within {self.timeout:g}s") from None
        except asyncio.CancelledError:
            raise_if_ours()
            raise SourceUnavailable(f"Nacos: {what} was cancelled by the SDK (reconnecting)") from None

    async def get(self, data_id: str) -> str | None:
        content: str | None = await self._bounded(f"reading {data_id}", self.client.get(data_id))
        return content

    async def publish(self, data_id: str, content: str, cas_md5: str = "") -> None:
        await self._bounded(f"writing {data_id}", self.client.publish(data_id, content, cas_md5))

    async def listen(self, data_id: str, listener: Any) -> None:
        await self._bounded(f"listening to {data_id}", self.client.listen(data_id, listener))

    async def list_data_ids(self) -> list[str]:
        ids: list[str] = await self._bounded("listing configs", self.client.list_data_ids())
        return ids

    async def check(self) -> None:
        await self._bounded("connecting", self.client.check())

    async def aclose(self) -> None:
        await self.client.aclose()


def raise_if_ours() -> None:
    """Re-raise a CancelledError that is meant for us (our task is being cancelled, our
    deadline passed); the caller turns any other into an outage: nacos-sdk-python cancels
    futures its callers await while it reconnects, and that must not pass for our own."""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        raise asyncio.CancelledError
