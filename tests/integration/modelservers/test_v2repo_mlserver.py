"""`v2-repository` target against a real MLServer: hot swaps under load, failures, unload."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra.mlserver import IMPLEMENTATION, MLServer, infer_body, prediction
from tests.integration.modelservers.loadloop import LoadLoop
from watcher.core.errors import SettingsError, TargetError
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, create
from watcher.targets.v2repo import V2RepositoryTarget

# async fixtures run in the session loop (pyproject); the tests must share it
pytestmark = pytest.mark.asyncio(loop_scope="session")


def spec(name: str, uri: Path | str, version: str = "v1.0.0", **model: Any) -> ModelSpec:
    uri = uri.as_uri() if isinstance(uri, Path) else uri
    return ModelSpec.model_validate({"name": name, "version": version,
                                     "model": {"uri": uri, "implementation": IMPLEMENTATION,
                                               **model}})


@pytest.fixture
async def target(mlserver: MLServer, tmp_path: Path) -> AsyncIterator[V2RepositoryTarget]:
    ctx = PluginContext(state_dir=tmp_path, environment="test")
    t = create("target", {"kind": "v2-repository", "url": mlserver.url,
                          "repository": str(mlserver.repository), "ready_timeout": 30}, ctx)
    assert isinstance(t, V2RepositoryTarget)
    yield t
    await t.aclose()


def infer(name: str):  # type: ignore[no-untyped-def]
    async def request(client: httpx.AsyncClient) -> float:
        return prediction(await client.post(f"/v2/models/{name}/infer", json=infer_body(1.0)))
    return request


async def test_swap_under_load_changes_predictions_with_zero_failures(
    mlserver: MLServer, target: V2RepositoryTarget, trained: tuple[Path, Path]
) -> None:
    double, triple = trained
    await target.apply(spec("swap", double), None)
    assert mlserver.predict("swap") == pytest.approx(2.0)
    windows: list[tuple[float, float]] = []
    async with LoadLoop(mlserver.url, infer("swap"), workers=4, max_requests=20_000,
                        max_seconds=90) as loop:
        await loop.wait_for(lambda o: o.total >= 50, 10)
        previous = spec("swap", double)
        for i, uri in enumerate([triple, double, triple, double, triple]):
            new = spec("swap", uri, version=f"v1.0.{i + 1}")
            started = time.monotonic()
            await target.apply(new, previous)
            windows.append((started, time.monotonic()))
            want = 3.0 if uri == triple else 2.0
            seen = len(loop.outcomes.values)
            # after apply returns, every answer comes from the new model (bar those in flight)
            await loop.wait_for(lambda o, n=seen: len(o.values) >= n + 100, 20)
            assert all(v == pytest.approx(want) for _, v in loop.outcomes.values[seen + 4:]), i
            previous = new
    outcomes = loop.outcomes
    during = sum(1 for t, _ in outcomes.values if any(a <= t <= b for a, b in windows))
    took = [(b - a) * 1000 for a, b in windows]
    print(f"\n{outcomes.total} inference requests, {during} answered while a swap was under "
          f"way, {len(outcomes.failures)} failed; 5 swaps (write+load+ready) took "
          f"{min(took):.0f}-{max(took):.0f} ms")
    assert outcomes.failures == []
    assert [round(v) for v in outcomes.distinct()] == [2, 3]
    assert mlserver.predict("swap") == pytest.approx(3.0)
    written = json.loads((mlserver.repository / "swap" / "model-settings.json").read_text())
    assert written == {"name": "swap", "implementation": IMPLEMENTATION,
                       "parameters": {"uri": str(triple)}}


async def test_bad_uri_keeps_old_model_serving(
    mlserver: MLServer, target: V2RepositoryTarget, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    double, _ = trained
    good = spec("keep", double)
    await target.apply(good, None)
    path = mlserver.repository / "keep" / "model-settings.json"
    before = path.read_bytes()
    async with LoadLoop(mlserver.url, infer("keep"), max_requests=5000, max_seconds=30) as loop:
        await loop.wait_for(lambda o: o.total >= 20, 10)
        with pytest.raises(TargetError, match=r"status 422: Invalid URI"):
            await target.apply(spec("keep", tmp_path / "missing.joblib", "v1.1.0"), good)
        # a file that exists but is no model: the server's loader fails
        junk = tmp_path / "junk.joblib"
        junk.write_bytes(b"not a pickle")
        with pytest.raises(TargetError, match=r"load keep v1\.2\.0: status"):
            await target.apply(spec("keep", junk, "v1.2.0"), good)
        await loop.wait_for(lambda o: o.total >= 40, 10)
    assert loop.outcomes.failures == []
    assert {round(v) for _, v in loop.outcomes.values} == {2}
    assert mlserver.predict("keep") == pytest.approx(2.0)
    assert path.read_bytes() == before  # the repository still describes what serves


async def test_first_load_failure_leaves_no_settings_behind(
    mlserver: MLServer, target: V2RepositoryTarget, tmp_path: Path
) -> None:
    with pytest.raises(TargetError):
        await target.apply(spec("never", tmp_path / "missing.joblib"), None)
    assert not (mlserver.repository / "never").exists()
    assert mlserver.ready("never") != 200


async def test_remove_unloads_and_forgets(
    mlserver: MLServer, target: V2RepositoryTarget, trained: tuple[Path, Path]
) -> None:
    await target.apply(spec("gone", trained[0]), None)
    assert mlserver.ready("gone") == 200
    await target.remove("gone")
    assert mlserver.ready("gone") == 404
    assert not (mlserver.repository / "gone").exists()
    await target.remove("gone")  # idempotent: unknown to the server counts as unloaded


async def test_model_parameters_are_placed_where_mlserver_reads_them(
    mlserver: MLServer, target: V2RepositoryTarget, trained: tuple[Path, Path]
) -> None:
    s = spec("params", trained[1], parameters={"max_batch_size": 4, "max_batch_time": 0.01,
                                                "content_type": "np", "note": "x"})
    await target.apply(s, None)
    written = json.loads((mlserver.repository / "params" / "model-settings.json").read_text())
    assert written["max_batch_size"] == 4
    assert written["parameters"]["content_type"] == "np"
    assert written["parameters"]["extra"] == {"note": "x"}
    assert mlserver.predict("params") == pytest.approx(3.0)
    await target.remove("params")


async def test_unreachable_server_is_a_target_error(
    target: V2RepositoryTarget, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.infra.common import free_port

    opts = target.options.model_copy(update={"url": f"http://127.0.0.1:{free_port()}",
                                             "repository": tmp_path})
    dead = V2RepositoryTarget(opts)
    with pytest.raises(TargetError, match="ConnectError"):
        await dead.apply(spec("dead", trained[0]), None)
    assert not (tmp_path / "dead").exists()
    await dead.aclose()


async def test_options_are_validated(tmp_path: Path) -> None:
    ctx = PluginContext(state_dir=tmp_path, environment="test")
    with pytest.raises(SettingsError, match=r"target\.repository"):
        create("target", {"kind": "v2-repository", "url": "http://127.0.0.1:1",
                          "repository": str(tmp_path / "absent")}, ctx)
    with pytest.raises(SettingsError, match=r"target\.bogus"):
        create("target", {"kind": "v2-repository", "url": "http://127.0.0.1:1",
                          "repository": str(tmp_path), "bogus": 1}, ctx)
