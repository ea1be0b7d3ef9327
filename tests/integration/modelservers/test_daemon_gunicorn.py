"""The real daemon driving gunicorn through the `signal` target, and verifying big weights."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.infra.daemon import DaemonHarness
from tests.infra.gunicorn_app import Gunicorn
from tests.integration.modelservers.loadloop import LoadLoop

pytestmark = pytest.mark.asyncio(loop_scope="session")
GIB = 1024**3


def doc(version: str, uri: str, sha256: str | None = None, temperature: float = 0.5) -> bytes:
    model: dict[str, Any] = {"uri": uri, "parameters": {"temperature": temperature}}
    if sha256:
        model["sha256"] = sha256
    return yaml.safe_dump({"name": "chat", "version": version, "model": model}).encode()


class Env:
    def __init__(self, tmp: Path) -> None:
        self.models = tmp / "models"
        self.models.mkdir()
        config = tmp / "chat.json"  # what the workers read; the daemon rewrites it
        config.write_text(json.dumps({"version": "v0.0.0", "model": {}}))
        self.gunicorn = Gunicorn(tmp / "gunicorn", config).start()
        self.daemon = DaemonHarness(tmp / "daemon", {
            "source": {"kind": "localdir", "path": str(self.models), "resync_interval": 5},
            "target": {"kind": "signal", "pidfile": str(self.gunicorn.pidfile),
                       "spec_file": str(config)},
        })

    def publish(self, content: bytes) -> str:
        from watcher.sources.localdir import revision_of

        path = self.models / "chat.yaml"
        tmp = path.with_name(".chat.yaml.swp")
        tmp.write_bytes(content)
        tmp.replace(path)
        return revision_of(content)

    def daemon_status(self, field: str) -> int:
        """A `VmXXX:` figure (KiB) of the daemon process, from /proc."""
        assert self.daemon.proc is not None
        for line in Path(f"/proc/{self.daemon.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.daemon.stop()
        e.gunicorn.stop()


async def served_version(client: httpx.AsyncClient) -> str:
    resp = await client.get("/")
    resp.raise_for_status()
    version: str = resp.json()["version"]
    return version


async def test_published_revisions_reload_gunicorn_with_zero_failed_requests(env: Env) -> None:
    r1 = env.publish(doc("v1.0.0", "file:///srv/chat/v1"))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, "chat", r1, 30)
    async with LoadLoop(env.gunicorn.url, served_version, workers=4, max_requests=20_000,
                        max_seconds=120) as loop:
        await loop.wait_for(lambda o: len(o.values) > 0 and o.values[-1][1] == "v1.0.0", 20)
        for i in (1, 2):
            version = f"v1.{i}.0"
            rev = env.publish(doc(version, f"file:///srv/chat/v1.{i}", temperature=0.1 * i))
            await asyncio.to_thread(env.daemon.wait_applied, "chat", rev, 30)
            await loop.wait_for(lambda o, v=version: len(o.values) > 30
                                and all(x == v for _, x in o.values[-30:]), 30)
    print(f"\ndaemon+gunicorn: {loop.outcomes.total} requests over 2 SIGHUP reloads, "
          f"{len(loop.outcomes.failures)} failed")
    assert loop.outcomes.failures == []
    assert loop.outcomes.distinct()[-2:] == ["v1.1.0", "v1.2.0"]
    assert env.daemon.wait_outcome("chat", rev, "applied")["plan"].startswith("hot (model.")


async def test_daemon_verifies_a_sparse_gigabyte_in_a_few_megabytes(env: Env,
                                                                   tmp_path: Path) -> None:
    big = tmp_path / "weights.bin"
    with big.open("wb") as f:
        f.truncate(GIB)  # sparse: 1 GiB of zeros that costs no disk
    zeros, h = bytes(1024 * 1024), hashlib.sha256()
    for _ in range(1024):
        h.update(zeros)
    r1 = env.publish(doc("v1.0.0", "file:///srv/chat/v1"))
    env.daemon.start()
    await asyncio.to_thread(env.daemon.wait_applied, "chat", r1, 30)
    assert env.daemon.proc is not None
    Path(f"/proc/{env.daemon.proc.pid}/clear_refs").write_text("5")  # peak RSS := current
    before = env.daemon_status("VmHWM")
    bad = env.publish(doc("v1.1.0", big.as_uri(), "0" * 64))
    row = await asyncio.to_thread(env.daemon.wait_outcome, "chat", bad, "rejected", 120)
    assert "sha256 mismatch" in row["reason"]  # it did read the whole gigabyte
    good = env.publish(doc("v1.2.0", big.as_uri(), h.hexdigest()))
    await asyncio.to_thread(env.daemon.wait_applied, "chat", good, 120)
    growth = env.daemon_status("VmHWM") - before
    print(f"\ndaemon verified 2 x 1 GiB: peak RSS {before} KiB -> +{growth} KiB")
    assert growth < 8 * 1024
    assert env.gunicorn.get()["version"] == "v1.2.0"
