"""model-watcher-once.timer + .service, the cron-style fallback, under a real systemd: the
timer runs `once`, which applies and records the result in the same state as the daemon;
while the daemon runs, `once` refuses to act and says so, without failing the unit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.common import wait_until
from tests.infra.model_server import ModelServer
from tests.integration.systemd.conftest import UNIT, Service, doc

ONCE = "model-watcher-once.service"
TIMER = "model-watcher-once.timer"
# The shipped schedule is 2 min after boot, then 5 min after each run; the test's drop-in
# fires the timer 1 s after it is started instead.
TIMER_DROPIN = "[Timer]\nOnBootSec=\nOnUnitInactiveSec=\nRandomizedDelaySec=0\nOnActiveSec=1s\nAccuracySec=100ms\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    s = ModelServer(tmp_path / "server").start()
    yield s
    s.stop()


def test_timer_runs_once_and_records_it_and_once_refuses_beside_the_daemon(
        mw: Service, server: ModelServer) -> None:
    host = mw.host
    mw.settings(target={"kind": "http", "url": server.url + "/admin/reload", "timeout": 5},
                health={"url": server.url + "/health", "period": 0.1, "latency_ms": 1000})
    host.write(f"/etc/systemd/system/{TIMER}.d/zz-test.conf", TIMER_DROPIN)
    host.systemctl("daemon-reload")
    rev = mw.publish(doc("v1.0.0"))
    cursor = host.cursor()

    host.systemctl("start", TIMER)
    wait_until(lambda: host.show(ONCE, "ExecMainExitTimestampMonotonic")
               ["ExecMainExitTimestampMonotonic"] not in ("", "0"), 60, "the timer's run of once",
               interval=0.3)
    props = host.show(ONCE, "Result", "ActiveState")
    assert props == {"Result": "success", "ActiveState": "inactive"}, props
    assert server.config()["spec"]["version"] == "v1.0.0"
    assert [r["outcome"] for r in mw.history() if r["revision"] == rev] == ["applied"]
    log = host.messages(ONCE, cursor)
    assert f"demo\t{rev}\tapplied" in log, log  # once's summary, in the journal
    host.systemctl("stop", TIMER)

    # beside the running daemon, once refuses (exit 3), says so, and the unit does not fail
    host.systemctl("start", UNIT)
    rev2 = mw.publish(doc("v1.0.0", temperature=0.1))
    mw.wait_applied(rev2)
    cursor = host.cursor()
    host.systemctl("start", ONCE)
    # (a oneshot's exit status is not kept once it is inactive; the message says it)
    assert host.show(ONCE, "Result")["Result"] == "success"
    assert "already reconciles /var/lib/model-watcher; not acting" in host.messages(ONCE, cursor)
    assert [r["outcome"] for r in mw.history() if r["revision"] == rev2] == ["applied"]
