"""A revision the admission keeps waiting has its remote weights staged meanwhile
(core/prefetch.py), through the real reconciler, executor and stager, from a real HTTP
server on loopback that counts its downloads: the step then costs no download, nothing is
recorded before the admission, and a prefetch that fails leaves no partial file and no row
(the apply records the outcome once admitted)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.fleet import test_core_seams as seams
from tests.unit.fleet.test_core_seams import Scripted, rows
from watcher.core.gates import Decision, Gates
from watcher.core.outcome import Outcome
from watcher.core.reconciler import Reconciler
from watcher.fakes.servers import FakeTarget
from watcher.settings import Settings
from watcher.sources.base import Change

WEIGHTS = b"weights " * 40_000


class Artifacts:
    """A directory on loopback HTTP; `gets` lists the paths downloaded."""

    def __init__(self, root: Path) -> None:
        self.gets: list[str] = []
        outer = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.gets.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[Artifacts]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "w.bin").write_bytes(WEIGHTS)
    served = Artifacts(root)
    yield served
    served.server.shutdown()
    served.server.server_close()


def doc(version: str, uri: str, digest: str) -> bytes:
    return (f"name: m\nversion: {version}\nmodel: {{uri: '{uri}', sha256: '{digest}', "
            f"parameters: {{v: '{version}'}}}}\n").encode()


async def make(tmp_path: Path, gates: Gates, *,
               prefetch: bool = True) -> tuple[Reconciler, FakeTarget, list[Outcome]]:
    return await seams.make(tmp_path, gates, Settings(
        state_dir=tmp_path / "state", reconcile={"wait_min": 0.0, "wait_max": 0.0},
        policy={"uri_schemes": ["file", "http"]},
        weights={"attempts": 1, "backoff_initial": 0.05, "prefetch": prefetch}))


async def prefetched(rec: Reconciler) -> None:
    for _ in range(500):
        if rec.prefetch.running("m") is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the prefetch did not end")


def cache_files(rec: Reconciler) -> list[Path]:
    root = rec.executor.weights.cache.root
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_a_waiting_revision_is_staged_and_its_step_downloads_nothing(
        tmp_path: Path, artifacts: Artifacts) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    rec, target, outcomes = await make(tmp_path, gates)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    script.answers["r1"] = Decision("wait", "waiting: step 2 of 5")
    rec.changed(Change("m", "r1", doc("v1.0.0", f"{artifacts.url}/w.bin", digest)))
    await prefetched(rec)
    assert artifacts.gets == ["/w.bin"]
    assert rec.executor.weights.cache.has(digest)
    assert outcomes == [] and rows(rec, "r1") == [] and target.server.loaded == {}
    gates.recheck()  # asked again, still waiting: not fetched again
    await prefetched(rec)
    assert artifacts.gets == ["/w.bin"]
    script.answers.pop("r1")
    gates.recheck()
    await rec.idle()
    assert [o.label for o in outcomes] == ["applied"] and rows(rec, "r1") == ["applied"]
    assert artifacts.gets == ["/w.bin"], "the step must be a cache hit"
    served = target.server.loaded["m"]
    assert served.model.uri.startswith("file://")
    await rec.drain(1.0)
    await rec.executor.aclose()


async def test_a_failing_prefetch_records_nothing_and_leaves_no_partial_file(
        tmp_path: Path, artifacts: Artifacts) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    rec, _, outcomes = await make(tmp_path, gates)
    wrong = hashlib.sha256(b"something else").hexdigest()
    script.answers["r1"] = Decision("wait", "waiting: step 2 of 5")
    rec.changed(Change("m", "r1", doc("v1.0.0", f"{artifacts.url}/w.bin", wrong)))
    await prefetched(rec)
    assert artifacts.gets == ["/w.bin"]
    assert not rec.executor.weights.cache.has(wrong)
    assert [p for p in cache_files(rec) if p.stat().st_size == len(WEIGHTS)] == []
    assert outcomes == [] and rows(rec, "r1") == []
    script.answers.pop("r1")
    gates.recheck()
    await rec.idle()
    assert [o.label for o in outcomes] == ["rejected"], "the apply tries again and records it"
    assert "sha256" in outcomes[0].reason or "digest" in outcomes[0].reason, outcomes[0].reason
    await rec.drain(1.0)
    await rec.executor.aclose()


async def test_no_prefetch_when_the_weights_are_local(tmp_path: Path, artifacts: Artifacts) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    rec, _, _ = await make(tmp_path, gates)
    script.answers["r1"] = Decision("wait", "waiting")
    rec.changed(Change("m", "r1", doc("v1.0.0", "file:///w", hashlib.sha256(b"x").hexdigest())))
    await prefetched(rec)
    assert artifacts.gets == [] and cache_files(rec) == []
    await rec.drain(1.0)
    await rec.executor.aclose()


async def test_no_prefetch_when_switched_off(tmp_path: Path, artifacts: Artifacts) -> None:
    gates, script = Gates(), Scripted()
    gates.admission = script
    rec, _, outcomes = await make(tmp_path, gates, prefetch=False)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    script.answers["r1"] = Decision("wait", "waiting")
    rec.changed(Change("m", "r1", doc("v1.0.0", f"{artifacts.url}/w.bin", digest)))
    await prefetched(rec)
    await asyncio.sleep(0.2)
    assert artifacts.gets == []
    script.answers.pop("r1")
    gates.recheck()
    await rec.idle()
    assert [o.label for o in outcomes] == ["applied"] and artifacts.gets == ["/w.bin"]
    await rec.drain(1.0)
    await rec.executor.aclose()
