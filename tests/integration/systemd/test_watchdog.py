"""The watchdog and the start limit of model-watcher.service under a real systemd.

A wedged daemon (SIGSTOP from outside: no WATCHDOG=1 any more) is killed by systemd's
watchdog and restarted, and the restarted daemon converges without applying anything a
second time (the revision is handled, the model server is not touched). Then a crash loop
(SIGKILL after every start) ends at the unit's start limit. The test's drop-in only
shortens the delays (WatchdogSec 30 -> 3 s, RestartSec 5 -> 1 s, the SIGABRT->SIGKILL wait);
the limits themselves (StartLimitBurst=5 in 300 s) are the unit's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.common import wait_until
from tests.infra.model_server import ModelServer
from tests.integration.systemd.conftest import UNIT, Service, doc, main_pid

DROPIN = "[Service]\nWatchdogSec=3\nRestartSec=1\nTimeoutAbortSec=2\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    s = ModelServer(tmp_path / "server").start()
    yield s
    s.stop()


def test_watchdog_restarts_a_wedged_daemon_then_the_start_limit_stops_a_crash_loop(
        mw: Service, server: ModelServer) -> None:
    mw.test_dropin(DROPIN)
    mw.settings(target={"kind": "http", "url": server.url + "/admin/reload", "timeout": 5},
                health={"url": server.url + "/health", "period": 0.1, "latency_ms": 1000})
    rev = mw.publish(doc("v1.0.0"))
    mw.host.systemctl("start", UNIT)
    reloads = server.config()["reloads"]
    assert reloads == 1
    pid = main_pid(mw)
    cursor = mw.host.cursor()

    mw.host.sh(f"kill -STOP {pid}")  # the wedge: the pings stop, from outside
    wait_until(lambda: main_pid(mw) not in (0, pid) and mw.show("ActiveState")["ActiveState"] == "active",
               60, "the watchdog's kill and the restart", interval=0.3)
    log = mw.host.messages(UNIT, cursor)
    assert "Watchdog timeout" in log, log
    assert mw.show("NRestarts")["NRestarts"] == "1"
    # converged without applying anything twice: READY again, the server untouched
    assert mw.applied() == rev
    assert server.config()["reloads"] == reloads
    assert [r["outcome"] for r in mw.history() if r["revision"] == rev] == ["applied"]

    # a crash loop: every start killed; the 6th start within 300 s is refused
    for _ in range(6):
        pid = main_pid(mw)
        if pid == 0:
            break
        mw.host.sh(f"kill -KILL {pid}")
        wait_until(lambda p=pid: main_pid(mw) != p and mw.show("ActiveState")["ActiveState"]  # type: ignore[misc]
                   in ("active", "failed"), 30, "a restart or the start limit", interval=0.3)
    props = mw.show("ActiveState", "SubState", "NRestarts")
    assert (props["ActiveState"], props["SubState"]) == ("failed", "failed"), props
    # systemd 252 keeps Result=signal (the last crash) and says why it stopped restarting
    assert "Start request repeated too quickly" in mw.host.messages(UNIT, cursor)
    print(f"crash loop stopped by the start limit after {props['NRestarts']} restarts")
