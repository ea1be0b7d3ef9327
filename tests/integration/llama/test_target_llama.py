"""The `llama-server` target driven directly (no daemon) against a real router pair: the
cases the daemon tests do not reach."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.infra.llama import RouterPair, running_pair
from tests.integration.llama.conftest import Reference, Tiny
from watcher.core.errors import TargetError
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, create
from watcher.targets.llama import LlamaServerTarget

pytestmark = pytest.mark.asyncio(loop_scope="session")


def spec(name: str, version: str, weights: Path) -> ModelSpec:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return ModelSpec.model_validate({"name": name, "version": version,
                                     "model": {"uri": weights.as_uri(), "sha256": digest}})


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[tuple[RouterPair, LlamaServerTarget]]:
    """A pair whose routers may hold one model each, and a target on it."""
    with running_pair(tmp_path / "llama", models_max=1) as pair:
        target = create("target", pair.target_options(),
                        PluginContext(state_dir=tmp_path / "state", environment="test"))
        assert isinstance(target, LlamaServerTarget)
        yield pair, target
        await target.aclose()


async def test_no_room_on_the_standby_fails_before_anything_loads(
        small: tuple[RouterPair, LlamaServerTarget], tiny: Tiny, reference: Reference) -> None:
    pair, target = small
    await target.apply(spec("one", "v1.0.0", tiny.a), None)
    serving = pair.active()
    with pytest.raises(TargetError, match="--models-max 1"):
        await target.apply(spec("two", "v1.0.0", tiny.b), None)
    assert pair.active() is serving and pair.tokens("one") == reference.a
    assert pair.loaded() in ({"blue": {"one"}, "green": set()}, {"blue": set(), "green": {"one"}})
    assert not (pair.models_dir / "two").exists()


async def test_the_same_files_again_do_not_move_traffic(
        small: tuple[RouterPair, LlamaServerTarget], tiny: Tiny, reference: Reference) -> None:
    pair, target = small
    first = spec("one", "v1.0.0", tiny.a)
    await target.apply(first, None)
    serving, preset = pair.active(), pair.active().preset.read_bytes()
    serving.stop()  # the active router restarts (e.g. a reboot): load-on-startup brings it back
    serving.start()
    await target.apply(spec("one", "v1.0.1", tiny.a), first)  # only the version label differs
    assert pair.active() is serving and serving.preset.read_bytes() == preset
    assert pair.tokens("one") == reference.a
