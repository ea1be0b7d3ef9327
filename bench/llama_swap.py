"""llama-server rows of bench.availability: chat completions while the weights change.

(a) through the daemon: a document naming model B is published while model A serves; the
    `llama-server` target loads B on the standby router and moves nginx (docs/llama.md);
(b) baseline: the same llama-server router, stopped and started again on its port with B
    in its preset (what an operator does by hand), the load loop on that port;
(c) llama-server alone, no restart: B written into the preset under the same name and
    `GET /models?reload=1` (the router unloads A while answering, then loads B): the single
    router design this target does not use, measured to show why (docs/llama.md).

For each: 4 clients sending chat completions back to back (more than the 2 slots each
instance has, as under real use), their requests and failures summed, the longest gap any
client saw between two successful answers, and the time from the change (publish / stop /
reload) to the first completion that comes from model B (token ids at temperature 0).
Tiny generated models (tests/infra/llama_models.py), so the figures show the mechanism's
own cost, not a real model's load time.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

NAME = "bench-chat"


class FirstAnswer:
    """Polls completions (every 5 ms, loopback) until the answer's token ids are `wanted`."""

    def __init__(self, url: str, wanted: tuple[int, ...], max_seconds: float = 120) -> None:
        from tests.infra.llama import completion_body

        self.url, self.wanted, self.max_seconds = url, wanted, max_seconds
        self.body = completion_body(NAME)
        self.started = 0.0
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FirstAnswer:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while time.monotonic() - self.started < self.max_seconds:
                try:
                    resp = client.post(self.url + "/completion", json=self.body)
                    if resp.status_code == 200 and tuple(resp.json()["tokens"]) == self.wanted:
                        self.seconds = time.monotonic() - self.started
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.005)

    def result_ms(self) -> float | None:
        self._thread.join(self.max_seconds + 5)
        return None if self.seconds is None else self.seconds * 1000


CLIENTS = 4


@contextlib.contextmanager
def clients(load_cls: Any, url: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`CLIENTS` load loops at once; the dict yielded is filled with their summed result."""
    summary: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        loads = [stack.enter_context(load_cls(url, body)) for _ in range(CLIENTS)]
        yield summary
    results = [load.result() for load in loads]
    summary.update(requests=sum(r["requests"] for r in results),
                   failed=sum(r["failed"] for r in results),
                   longest_gap_ms=max(r["longest_gap_ms"] for r in results))


def _doc(version: str, weights: Path) -> bytes:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return yaml.safe_dump({"name": NAME, "version": version,
                           "model": {"uri": weights.as_uri(), "sha256": digest}}).encode()


def bench_llama(root: Path, load_cls: Any) -> dict[str, Any]:
    from tests.infra.daemon import DaemonHarness
    from tests.infra.llama import LlamaServer, chat_body, running_pair
    from tests.infra.llama_models import write_model
    from watcher.sources.localdir import revision_of

    a, b = write_model(root / "a.gguf", seed=1), write_model(root / "b.gguf", seed=2)
    out: dict[str, Any] = {}
    wanted = _tokens_of(root / "ref", b)
    docs = root / "docs"
    docs.mkdir()
    with running_pair(root / "pair") as pair:
        daemon = DaemonHarness(root / "daemon", {
            "source": {"kind": "localdir", "path": str(docs)},
            "target": pair.target_options(),
            "health": {"url": f"{pair.url}/health", "period": 0.1},
        })
        try:
            (docs / f"{NAME}.yaml").write_bytes(_doc("v1.0.0", a))
            daemon.start()
            daemon.wait_applied(NAME, revision_of(_doc("v1.0.0", a)), 120)
            with clients(load_cls, pair.url + "/v1/chat/completions", chat_body(NAME)) as load:
                first = FirstAnswer(pair.url, wanted).start()
                (docs / f"{NAME}.yaml").write_bytes(_doc("v1.1.0", b))
                daemon.wait_applied(NAME, revision_of(_doc("v1.1.0", b)), 120)
                first_ms = first.result_ms()
            out["model-watcher hot swap through the daemon (router pair + nginx)"] = {
                **load, "first_new_ms": first_ms}
        finally:
            daemon.stop()
    server = LlamaServer(root / "single")
    server.preset.write_text(f"version = 1\n[{NAME}]\nmodel = {a}\nload-on-startup = true\n")
    server.start()
    try:
        with clients(load_cls, server.url + "/v1/chat/completions", chat_body(NAME)) as load:
            first = FirstAnswer(server.url, wanted).start()
            server.stop()
            server.preset.write_text(f"version = 1\n[{NAME}]\nmodel = {b}\nload-on-startup = true\n")
            server.start()
            first_ms = first.result_ms()
        out["baseline: stop llama-server, start it again with the new model"] = {
            **load, "first_new_ms": first_ms}
        server.preset.write_text(f"version = 1\n[{NAME}]\nmodel = {a}\nload-on-startup = true\n")
        httpx.get(server.url + "/models", params={"reload": "1"}, timeout=60)
        server.tokens(NAME)
        with clients(load_cls, server.url + "/v1/chat/completions", chat_body(NAME)) as load:
            first = FirstAnswer(server.url, wanted).start()
            server.preset.write_text(f"version = 1\n[{NAME}]\nmodel = {b}\nload-on-startup = true\n")
            httpx.get(server.url + "/models", params={"reload": "1"}, timeout=60)
            first_ms = first.result_ms()
        out["llama-server alone: same name, preset reload (not used)"] = {
            **load, "first_new_ms": first_ms}
    finally:
        server.stop()
    return out


def _tokens_of(workdir: Path, weights: Path) -> tuple[int, ...]:
    """What `weights` answers on its own (a throwaway router), to recognise it later."""
    from tests.infra.llama import running_llama

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "models.ini").write_text(f"version = 1\n[{NAME}]\nmodel = {weights}\n")
    with running_llama(workdir) as ref:
        return ref.tokens(NAME)
