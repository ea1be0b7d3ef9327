"""sd_notify datagrams on a real unix datagram socket, driven by EventBus events."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from watcher.core.events import Event, Kind
from watcher.core.outcome import Outcome, Verdict
from watcher.core.plan import Plan
from watcher.fakes.context import feature_context
from watcher.observability import sd_notify as notify


@pytest.fixture
def sock(tmp_path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    s.bind(str(path))
    s.setblocking(False)
    yield s
    s.close()


def drain(s: socket.socket) -> list[dict[str, str]]:
    out = []
    while True:
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return out
        out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


def test_no_socket_is_a_noop() -> None:
    n = notify.SdNotifier(None)
    assert not n.enabled
    assert n.send(ready=1) is False


def test_send_lines(sock: socket.socket) -> None:
    n = notify.SdNotifier(sock.getsockname())
    assert n.send(ready=1, status="a\nb")
    assert drain(sock) == [{"READY": "1", "STATUS": "a b"}]
    n.close()


def test_abstract_namespace(tmp_path: Path) -> None:
    name = f"mw-test-{os.getpid()}-{time.monotonic_ns()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.setblocking(False)
    try:
        n = notify.SdNotifier("@" + name)
        assert n.send(watchdog=1)
        assert drain(s) == [{"WATCHDOG": "1"}]
    finally:
        s.close()


def test_watchdog_interval() -> None:
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval(
        {"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}) == 0.25


def test_status_line() -> None:
    st = notify.StatusLine()
    st.update(Event(Kind.SOURCE_UP))
    st.update(Outcome(Verdict.APPLIED, "qwen-chat", "42", plan=Plan("hot", ("model.uri",))))
    assert st.text == "applied qwen-chat@rev 42 (hot); source ok"
    st.update(Event(Kind.SOURCE_DOWN, reason="connection refused"))
    assert st.text.endswith("source DOWN (connection refused)")
    st.update(Outcome(Verdict.FAILED, "m", "0123456789abcdef0123", "x" * 400))
    assert st.text.startswith("FAILED m@rev 0123456789ab: ")
    assert len(st.text) <= 200


async def test_feature_lifecycle(sock: socket.socket, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", sock.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = feature_context(tmp_path)
    started = time.monotonic()
    task = asyncio.create_task(notify.serve(daemon))
    msgs: list[dict[str, str]] = []
    async with asyncio.timeout(10):  # pings keep coming (however loaded the machine is)
        while sum(m.get("WATCHDOG") == "1" for m in msgs) < 3:
            await asyncio.sleep(0.01)
            msgs += drain(sock)
    elapsed = time.monotonic() - started
    pings = [m for m in msgs if m.get("WATCHDOG") == "1"]
    assert len(pings) <= elapsed / 0.05 + 2, "pinged more often than WATCHDOG_USEC / 2"
    assert not any("READY" in m for m in msgs)

    daemon.bus.emit(Event(Kind.SOURCE_UP))
    daemon.bus.emit(Outcome(Verdict.APPLIED, "qwen-chat", "42"))
    daemon.bus.emit(Event(Kind.RECONCILED))
    daemon.bus.emit(Event(Kind.RECONCILED))  # READY only once
    await asyncio.sleep(0)
    msgs = [m for m in drain(sock) if "WATCHDOG" not in m]
    ready = [m for m in msgs if m.get("READY") == "1"]
    assert len(ready) == 1
    assert ready[0]["STATUS"] == "applied qwen-chat@rev 42; source ok"

    daemon.bus.emit(Event(Kind.RELOADING))
    daemon.bus.emit(Event(Kind.RECONCILED))
    msgs = [m for m in drain(sock) if "WATCHDOG" not in m]
    assert msgs[0]["RELOADING"] == "1" and int(msgs[0]["MONOTONIC_USEC"]) > 0
    assert msgs[1]["READY"] == "1"

    daemon.bus.emit(Event(Kind.STOPPING))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    msgs = [m for m in drain(sock) if "WATCHDOG" not in m]
    assert [m.get("STOPPING") for m in msgs] == ["1"]  # once, not again on cancel


async def test_reload_ready_fallback(sock: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "RELOAD_READY_FALLBACK", 0.05)
    feature = notify.NotifyFeature(notify.SdNotifier(sock.getsockname()),
                                   asyncio.get_running_loop())
    feature.on_message(Event(Kind.RECONCILED))
    feature.on_message(Event(Kind.RELOADING))
    await asyncio.sleep(0.2)
    msgs = drain(sock)
    assert [("READY" in m, "RELOADING" in m) for m in msgs] == [
        (True, False), (False, True), (True, False)]
    assert msgs[-1]["STATUS"].startswith("settings reloaded")


async def test_serve_without_socket_returns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    await asyncio.wait_for(notify.serve(feature_context(tmp_path)), 1)


async def test_watchdog_pings_come_from_the_event_loop(sock: socket.socket) -> None:
    """A blocking call on the loop stops the pings (what systemd's watchdog relies on); the
    daemon has no hook for this, the test blocks its own loop."""
    feature = notify.NotifyFeature(notify.SdNotifier(sock.getsockname()), asyncio.get_running_loop())
    stamps: list[float] = []
    task = asyncio.create_task(feature.watchdog(0.05))

    async def collect(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamps.extend(time.monotonic() for _ in drain(sock))
            await asyncio.sleep(0.01)

    await collect(0.3)
    before = len(stamps)
    blocked_at = time.monotonic()
    time.sleep(0.6)  # the wedge: a blocking call on the event loop
    blocked_until = time.monotonic()
    drain(sock)  # a ping may have been queued just before the wedge
    await collect(0.3)
    task.cancel()
    assert before >= 3
    assert not [t for t in stamps if blocked_at < t < blocked_until - 0.05]
    assert len(stamps) - before >= 3, "the pings did not resume"
