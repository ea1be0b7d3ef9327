"""A bounded request loop against 127.0.0.1: counts failures and records what each answer said.

Bounded twice: at most `max_requests` requests and `max_seconds` wall time, whichever comes
first, and it stops by itself; `stop()` ends it earlier. Only loopback URLs are accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import httpx

T = TypeVar("T")


@dataclass
class Outcomes(Generic[T]):
    values: list[tuple[float, T]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.values) + len(self.failures)

    def distinct(self) -> list[T]:
        """Answers in the order they first appeared."""
        seen: list[T] = []
        for _, v in sorted(self.values, key=lambda tv: tv[0]):
            if v not in seen:
                seen.append(v)
        return seen


class LoadLoop(Generic[T]):
    def __init__(self, base_url: str, request: Callable[[httpx.AsyncClient], Awaitable[T]],
                 *, workers: int = 4, max_requests: int = 20_000, max_seconds: float = 60) -> None:
        assert base_url.startswith(("http://127.0.0.1:", "http://localhost:")), base_url
        self.base_url, self.request = base_url, request
        self.workers, self.max_requests, self.max_seconds = workers, max_requests, max_seconds
        self.outcomes: Outcomes[T] = Outcomes()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _worker(self, client: httpx.AsyncClient, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.outcomes.total >= self.max_requests:
                return
            try:
                value = await self.request(client)
            except Exception as exc:
                self.outcomes.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            else:
                self.outcomes.values.append((time.monotonic(), value))

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        limits = httpx.Limits(max_connections=self.workers)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, deadline) for _ in range(self.workers)))

    async def __aenter__(self) -> LoadLoop[T]:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def wait_for(self, predicate: Callable[[Outcomes[T]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.outcomes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"load loop: condition not met within {timeout}s")
            await asyncio.sleep(0.02)
