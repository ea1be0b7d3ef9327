"""sd_notify from the real daemon on a real NOTIFY_SOCKET: READY, STATUS, WATCHDOG, RELOADING,
STOPPING, and a wedged daemon (SIGSTOP, from outside) whose pings stop. The same under a real
systemd, with the watchdog's kill and restart: tests/integration/systemd/test_watchdog.py."""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
from pathlib import Path

from tests.infra.common import wait_until
from tests.integration.ops.conftest import OpsEnv, doc

WATCHDOG_USEC = 400_000  # pings expected every 0.2 s
WEDGE_SECONDS = 1.5


class NotifyListener:
    """Binds a unix datagram socket and records (monotonic time, fields) per datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def having(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in list(self.messages) if key in m]

    def pings(self, since: float, until: float) -> list[float]:
        return [t for t, m in self.having("WATCHDOG") if since <= t <= until]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_sd_notify_lifecycle(tmp_path: Path) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    env = OpsEnv(tmp_path / "env", env={
        "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    try:
        rev = env.write(doc())
        env.daemon.start(wait_ready=False)
        wait_until(lambda: listener.having("READY"), 30, "READY=1")
        t_ready, ready = listener.having("READY")[0]
        # READY comes after the first reconcile: the document is applied by then
        assert ready["STATUS"].startswith(f"applied demo@rev {rev[:12]}"), ready
        assert ready["STATUS"].endswith("; source ok"), ready
        assert env.daemon.status()["models"]["demo"]["applied_revision"] == rev
        assert not [m for t, m in listener.having("STOPPING")]
        statuses = [m["STATUS"] for _, m in listener.having("STATUS")]
        assert statuses[0].startswith("starting") and len(statuses) >= 2

        # WATCHDOG at half of WATCHDOG_USEC: ~10 pings in 2 s
        t0 = time.monotonic()
        time.sleep(2.0)
        n = len(listener.pings(t0, t0 + 2.0))
        assert 7 <= n <= 13, f"{n} pings in 2 s, expected ~10"

        # SIGHUP: RELOADING=1, then READY=1 again
        env.daemon.signal(signal.SIGHUP)
        wait_until(lambda: listener.having("RELOADING"), 10, "RELOADING=1")
        t_reload = listener.having("RELOADING")[0][0]
        wait_until(lambda: [t for t, _ in listener.having("READY") if t > t_reload], 15,
                   "READY=1 after the reload")
        assert int(listener.having("RELOADING")[0][1]["MONOTONIC_USEC"]) > 0

        # a wedged daemon (stopped from outside) stops the pings; they come back after it
        time.sleep(0.5)
        t_wedge = time.monotonic()
        env.daemon.signal(signal.SIGSTOP)
        time.sleep(WEDGE_SECONDS)
        env.daemon.signal(signal.SIGCONT)
        time.sleep(1.0)
        pings = listener.pings(t_wedge - 1.0, time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) >= WEDGE_SECONDS - 0.2, gaps
        assert pings[-1] > t_wedge + WEDGE_SECONDS, "the pings did not resume"
        assert sum(1 for g in gaps if g > 1.0) == 1, gaps  # one wedge, one gap

        # SIGTERM: STOPPING=1, then a clean exit
        code = env.daemon.stop()
        assert code == 0
        stopping = listener.having("STOPPING")
        assert len(stopping) == 1 and stopping[0][0] > t_ready
    finally:
        env.close()
        listener.close()
