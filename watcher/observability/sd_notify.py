"""sd_notify: tell systemd (Type=notify) what the daemon is doing, and prove the loop lives.

The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
$NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). Sent here:

    READY=1       once the first full reconcile is done (Kind.RECONCILED), and again when a
                  reload (SIGHUP) has finished
    STATUS=...    a line a person can read: `applied qwen-chat@rev 42; source ok`
    RELOADING=1   on SIGHUP (Kind.RELOADING), with MONOTONIC_USEC as systemd >= 253 wants
    STOPPING=1    on SIGTERM (Kind.STOPPING) and when this task is cancelled
    WATCHDOG=1    every WATCHDOG_USEC/2 from a task on the event loop, so a wedged loop
                  stops the pings and systemd restarts the daemon

Without $NOTIFY_SOCKET `serve()` returns at once. Sending never raises: a lost datagram is
logged at DEBUG and the daemon goes on (systemd is the one that cares).

The tests wedge the daemon from outside (SIGSTOP) under a real systemd
(tests/integration/systemd/test_watchdog.py); that the pings come from the loop itself is
shown in-process (tests/unit/observability/test_sd_notify.py). There is no test hook here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from watcher.core.events import Event, Kind, Message
from watcher.core.outcome import Outcome

if TYPE_CHECKING:
    from watcher.features import FeatureContext

log = logging.getLogger("watcher.observability.sd_notify")

#: How long after RELOADING=1 READY=1 is sent even if no reconcile finished.
RELOAD_READY_FALLBACK = 10.0


class SdNotifier:
    """Sends sd_notify datagrams to one socket address; a no-op when there is none."""

    def __init__(self, address: str | None) -> None:
        self.address: str | None = None
        self._sock: socket.socket | None = None
        if address:
            # "@name" is the abstract namespace: a leading NUL byte on the wire.
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SdNotifier:
        return cls((env if env is not None else os.environ).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=VALUE` lines (keys upper-cased); False when not sent."""
        if self._sock is None or self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")  # a value is one line by protocol
            lines.append(f"{key.upper()}={text}")
        try:
            self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as exc:
            log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), None when not asked for.

    systemd sets WATCHDOG_PID too; when it names another process the pings are not ours.
    """
    env = env if env is not None else os.environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2


class StatusLine:
    """Folds events into the human STATUS= line: the last model action and the source state."""

    def __init__(self) -> None:
        self.action = "starting"
        self.source = "source connecting"

    def update(self, m: Message) -> bool:
        """Fold message `m` in; True when the line changed."""
        before = self.text
        target = f"{m.model}@rev {_short(m.revision)}" if m.model else ""
        plan = f" ({m.plan.kind})" if m.plan is not None else ""  # kind, not the path list
        if isinstance(m, Outcome):
            if m.label == "applied":
                self.action = f"applied {target}{plan}"
            elif m.label == "noop":
                self.action = f"unchanged {target}"
            elif m.label == "rejected":
                self.action = f"rejected {target}: {m.reason or 'invalid'}"
            elif m.label == "failed":
                self.action = f"FAILED {target}: {m.reason or 'apply failed'}"
            elif m.label in ("rolled_back", "restarted", "deleted"):
                self.action = f"{m.label.replace('_', ' ')} {target}"
        elif m.kind is Kind.APPLYING:
            self.action = f"applying {target}{plan}"
        elif m.kind is Kind.SOURCE_UP:
            self.source = "source ok"
        elif m.kind is Kind.SOURCE_DOWN:
            self.source = "source DOWN" + (f" ({m.reason})" if m.reason else "")
        elif m.kind is Kind.RELOADING:
            self.action = (f"settings NOT reloaded, running ones kept: {m.reason}" if m.reason
                           else "reloading settings")
        elif m.kind is Kind.STOPPING:
            self.action = "stopping"
        return self.text != before

    @property
    def text(self) -> str:
        line = f"{self.action}; {self.source}"
        return line if len(line) <= 200 else line[:197] + "..."


def _short(revision: str | None) -> str:
    rev = revision or "?"
    return rev[:12] if len(rev) > 12 else rev


class NotifyFeature:
    """Subscribes to the daemon's events and drives the notifier; see the module docstring."""

    def __init__(self, notifier: SdNotifier, loop: asyncio.AbstractEventLoop) -> None:
        self.notifier = notifier
        self.loop = loop
        self.status = StatusLine()
        self.ready = False
        self.reloading = False
        self.stopping = False
        self._reload_timer: asyncio.TimerHandle | None = None

    def on_message(self, ev: Message) -> None:
        changed = self.status.update(ev)
        kind = ev.kind if isinstance(ev, Event) else None
        if kind is Kind.RECONCILED:
            self._ready()
        elif kind is Kind.RELOADING and ev.reason:
            pass  # the reload failed (reason); READY=1 follows the next reconcile as usual
        elif kind is Kind.RELOADING:
            self.reloading = True
            self.notifier.send(
                reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                status=self.status.text,
            )
            self._reload_timer = self.loop.call_later(RELOAD_READY_FALLBACK, self._ready)
            return
        elif kind is Kind.STOPPING:
            self.stop()
            return
        if changed and not self.stopping:
            self.notifier.send(status=self.status.text)

    def _ready(self) -> None:
        if self._reload_timer is not None:
            self._reload_timer.cancel()
            self._reload_timer = None
        if self.ready and not self.reloading:
            return
        if self.reloading and self.status.action == "reloading settings":
            self.status.action = "settings reloaded"
        self.ready, self.reloading = True, False
        self.notifier.send(ready=1, status=self.status.text)
        log.info("sd_notify: READY=1 (%s)", self.status.text)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.status.action = "stopping"
        self.notifier.send(stopping=1, status=self.status.text)

    async def watchdog(self, interval: float) -> None:
        """Ping every `interval` seconds from the event loop, until cancelled."""
        while True:
            self.notifier.send(watchdog=1)
            await asyncio.sleep(interval)


async def serve(ctx: FeatureContext) -> None:
    """Run sd_notify from the daemon's events until cancelled; no-op without systemd."""
    notifier = SdNotifier.from_env()
    if not notifier.enabled:
        return
    loop = asyncio.get_running_loop()
    feature = NotifyFeature(notifier, loop)
    unsubscribe = ctx.bus.subscribe(feature.on_message)
    feature.notifier.send(status=feature.status.text)
    interval = watchdog_interval()
    try:
        if interval is not None:
            log.info("systemd watchdog: pinging every %.3gs", interval)
            await feature.watchdog(interval)
        else:
            await asyncio.Event().wait()  # until cancelled
    finally:
        unsubscribe()
        feature.stop()
        notifier.close()
