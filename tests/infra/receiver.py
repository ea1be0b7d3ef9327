"""A real HTTP receiver on 127.0.0.1 that records what it is sent (alert notifiers, OTLP).

Runs http.server in a thread, so tests in any event loop - and daemons in other processes -
can post to it. `script` queues answers (status, body) per path; unscripted requests get 200
with `default_body`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, default_body: bytes = b'{"errcode": 0, "code": 0}') -> None:
        self.requests: list[Received] = []
        self.default_body = default_body
        self._script: dict[str, deque[tuple[int, bytes]]] = defaultdict(deque)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                url = urlsplit(self.path)
                with receiver._lock:
                    receiver.requests.append(Received(
                        "POST", url.path, parse_qs(url.query),
                        {k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                    queue = receiver._script.get(url.path)
                    status, answer = queue.popleft() if queue else (200, receiver.default_body)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, path: str, *answers: tuple[int, bytes]) -> None:
        with self._lock:
            self._script[path].extend(answers)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
