"""Every task the daemon starts has a parent: a `TaskSet` that keeps it, reports its death
and cancels what is left at shutdown. No "Task exception was never retrieved", ever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TypeVar

log = logging.getLogger("watcher.core.tasks")
T = TypeVar("T")


class TaskSet:
    """Supervised tasks of one owner. A task that ends with an exception is logged with its
    traceback (and `on_error` is told); a cancelled one is not an error."""

    def __init__(self, owner: str, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[object]] = set()
        self._on_error = on_error

    def spawn(self, coro: Coroutine[object, object, T], name: str) -> asyncio.Task[T]:
        """Start `coro` as a supervised task named `name`."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: task %s died: %s: %s", self.owner, task.get_name(),
                      type(exc).__name__, exc, exc_info=exc)
            if self._on_error is not None:
                self._on_error(task.get_name(), exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
