"""Health gate, http target and signal target against real local HTTP servers and processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.infra.common import Proc, free_port, wait_until
from watcher.core.errors import TargetError
from watcher.core.health import HealthCheck, gate
from watcher.core.spec import ModelSpec
from watcher.targets.http import HttpOptions, HttpTarget
from watcher.targets.signal import SignalOptions, SignalTarget

SPEC = ModelSpec.model_validate({"name": "m", "version": "v1.0.0", "model": {"uri": "file:///w"}})


class Scripted:
    """A real HTTP server answering from a script of (status, delay) per request."""

    def __init__(self, script: list[tuple[int, float]]) -> None:
        self.script = script
        self.requests: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                n = len(outer.requests) - 1
                status, delay = outer.script[min(n, len(outer.script) - 1)]
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[type[Scripted]]:
    made: list[Scripted] = []

    class Factory(Scripted):
        def __init__(self, script: list[tuple[int, float]]) -> None:
            super().__init__(script)
            made.append(self)

    yield Factory
    for s in made:
        s.close()


FAST = {"period": 0.01, "timeout": 0.5}


async def test_gate_needs_success_threshold_consecutive_successes(scripted: type[Scripted]) -> None:
    s = scripted([(200, 0), (503, 0), (200, 0), (200, 0), (200, 0)])
    result = await gate(s.url + "/health", HealthCheck(success_threshold=3, failure_threshold=3, **FAST))
    assert result.ok and result.probes == 5


async def test_gate_fails_after_failure_threshold_consecutive_failures(scripted: type[Scripted]) -> None:
    s = scripted([(503, 0), (200, 0), (503, 0), (503, 0)])
    result = await gate(s.url + "/health", HealthCheck(success_threshold=2, failure_threshold=2, **FAST))
    assert not result.ok and result.probes == 4
    assert "2 consecutive failures" in result.reason and "status 503, expected 200" in result.reason


async def test_gate_counts_slow_answers_as_failures(scripted: type[Scripted]) -> None:
    s = scripted([(200, 0.15)])
    result = await gate(s.url + "/health", HealthCheck(latency_ms=50, failure_threshold=2, **FAST))
    assert not result.ok and "over the 50 ms threshold" in result.reason


async def test_gate_timeout_and_connection_refused() -> None:
    port = free_port()
    result = await gate(f"http://127.0.0.1:{port}/health", HealthCheck(failure_threshold=2, **FAST))
    assert not result.ok and "ConnectError" in result.reason


async def test_gate_initial_delay(scripted: type[Scripted]) -> None:
    s = scripted([(200, 0)])
    started = time.monotonic()
    assert (await gate(s.url, HealthCheck(initial_delay=0.3, **FAST))).ok
    assert time.monotonic() - started >= 0.3


async def test_http_target_posts_the_spec_and_accepts_2xx(scripted: type[Scripted]) -> None:
    s = scripted([(204, 0)])
    target = HttpTarget(HttpOptions(url=s.url + "/admin/{model}/reload"))
    await target.apply(SPEC, None)
    await target.aclose()
    assert s.requests == ["POST /admin/m/reload"]


async def test_http_target_does_not_retry_an_answered_request(scripted: type[Scripted]) -> None:
    s = scripted([(500, 0)])
    target = HttpTarget(HttpOptions(url=s.url + "/reload", retries=3))
    with pytest.raises(TargetError, match="status 500"):
        await target.apply(SPEC, None)
    await target.aclose()
    assert len(s.requests) == 1


async def test_http_target_retries_a_connection_reset_before_any_answer() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    seen: list[int] = []

    def serve() -> None:
        for n in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            seen.append(n)
            if n == 0:  # reset without answering
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    target = HttpTarget(HttpOptions(url=f"http://127.0.0.1:{port}/reload", retries=3))
    await target.apply(SPEC, None)
    await target.aclose()
    t.join(5)
    listener.close()
    assert seen == [0, 1]


async def test_http_target_retries_connection_errors_then_fails_clearly() -> None:
    target = HttpTarget(HttpOptions(url=f"http://127.0.0.1:{free_port()}/reload", retries=2))
    with pytest.raises(TargetError, match="ConnectError"):
        await target.apply(SPEC, None)
    await target.aclose()


async def test_http_target_times_out(scripted: type[Scripted]) -> None:
    s = scripted([(200, 1.0)])
    target = HttpTarget(HttpOptions(url=s.url, timeout=0.2))
    with pytest.raises(TargetError, match=r"no answer within 0\.2s"):
        await target.apply(SPEC, None)
    await target.aclose()


async def test_signal_target_writes_the_spec_then_signals(tmp_path: Path) -> None:
    marker = tmp_path / "got-hup"
    code = ("import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).write_text("
            f"pathlib.Path({str(tmp_path / 'm.json')!r}).read_text()))\n"
            "print('ready', flush=True)\ntime.sleep(30)\n")
    proc = Proc([sys.executable, "-c", code], tmp_path / "p.log")
    try:
        wait_until(lambda: "ready" in proc.output(), 10, "the child")
        pidfile = tmp_path / "p.pid"
        pidfile.write_text(str(proc.pid))
        target = SignalTarget(SignalOptions(pidfile=pidfile, spec_file=tmp_path / "{name}.json"))
        await target.apply(SPEC, None)
        wait_until(marker.exists, 5, "SIGHUP to arrive")
        assert '"name": "m"' in marker.read_text()
    finally:
        proc.stop()


async def test_signal_target_errors(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="does not exist"):
        await SignalTarget(SignalOptions(pidfile=tmp_path / "none.pid")).apply(SPEC, None)
    (tmp_path / "dead.pid").write_text("999999")
    with pytest.raises(TargetError, match="no process 999999"):
        await SignalTarget(SignalOptions(pidfile=tmp_path / "dead.pid")).apply(SPEC, None)
    assert os.getpid() and signal.SIGHUP
