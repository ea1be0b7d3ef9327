"""Delivery in the background: one queue and one worker per notifier, retries with backoff.

`submit()` never blocks and never raises, so an alert can never hold up an update: a full
queue drops its oldest message (logged and counted). A worker sends one message at a time;
a failure (connection error, timeout, non-2xx, a robot's error code) is logged with the
notifier's name and the reason only - never its URL, which carries the robot's token - and
retried after `backoff`, doubling up to `backoff_max`, `attempts` times in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx

from watcher.alerts.formats import NotifierSettings, check_answer, render
from watcher.alerts.rules import Notification

log = logging.getLogger("watcher.alerts")

Record = Callable[[Notification, str, str], None]  # (notification, notifier, result)


class Channel:
    """One notifier's queue and worker."""

    def __init__(self, name: str, settings: NotifierSettings, client: httpx.AsyncClient,
                 record: Record) -> None:
        self.name, self.settings, self.client, self.record = name, settings, client, record
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(settings.queue_size)

    def submit(self, n: Notification) -> None:
        if self.queue.full():
            dropped = self.queue.get_nowait()
            self.queue.task_done()
            log.error("alerts: notifier %s is backed up; dropped %r", self.name, dropped.title)
            self.record(dropped, self.name, "dropped")
        self.queue.put_nowait(n)

    async def run(self) -> None:
        while True:
            n = await self.queue.get()
            try:
                await self._deliver(n)
            finally:
                self.queue.task_done()

    async def _deliver(self, n: Notification) -> None:
        s = self.settings
        delay = s.backoff
        for attempt in range(1, s.attempts + 1):
            problem = await self._send_once(n)
            if problem is None:
                log.info("alerts: %s sent to %s", n.title, self.name)
                self.record(n, self.name, "ok")
                return
            if attempt == s.attempts:
                log.error("alerts: giving up on %s to %s after %d attempts: %s",
                          n.title, self.name, attempt, problem)
                self.record(n, self.name, "failed")
                return
            log.warning("alerts: sending %s to %s failed (attempt %d/%d): %s; retry in %.3gs",
                        n.title, self.name, attempt, s.attempts, problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.backoff_max)

    async def _send_once(self, n: Notification) -> str | None:
        url, headers, body = render(n, self.settings, time.time())
        try:
            resp = await self.client.post(url, content=body, headers=headers,
                                          timeout=self.settings.timeout)
        except httpx.TimeoutException:
            return f"no answer within {self.settings.timeout:g}s"
        except httpx.HTTPError as exc:
            return type(exc).__name__  # the message could name the URL, and so the token
        return check_answer(self.settings.kind, resp.status_code, resp.text)


class Dispatcher:
    """Routes a notification to the channels its rule names."""

    def __init__(self, notifiers: dict[str, NotifierSettings], record: Record) -> None:
        self.client = httpx.AsyncClient(follow_redirects=False)
        self.channels = {name: Channel(name, s, self.client, record)
                         for name, s in notifiers.items()}

    def submit(self, n: Notification) -> None:
        for name in n.notify:
            self.channels[name].submit(n)

    async def run(self) -> None:
        """Run every worker until cancelled; then close the HTTP client."""
        try:
            async with asyncio.TaskGroup() as tg:
                for ch in self.channels.values():
                    tg.create_task(ch.run(), name=f"alerts:{ch.name}")
        finally:
            with contextlib.suppress(Exception):
                await self.client.aclose()
