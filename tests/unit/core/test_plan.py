from __future__ import annotations

from typing import Any

from watcher.core.plan import changed_paths, make_plan
from watcher.core.spec import ModelSpec


def spec(**over: Any) -> ModelSpec:
    base: dict[str, Any] = {"name": "m", "version": "v1.0.0", "runtime": {"image": "img:v1", "env": {"A": "1"}},
                            "model": {"uri": "file:///w", "parameters": {"t": 0.7}},
                            "metadata": {"model_id": "a"}}
    for path, value in over.items():
        node = base
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return ModelSpec.model_validate(base)


HOT = ("model.",)


def test_changed_paths() -> None:
    assert changed_paths({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 4}}) == ["a.c", "a.d"]
    assert changed_paths([1, 2], [1, 2]) == []


def test_noop_for_metadata_and_version_only() -> None:
    p = make_plan(spec(), spec(metadata__model_id="b", version="v1.0.1"), hot_paths=HOT, can_restart=True)
    assert p.kind == "noop" and "metadata.model_id" in p.paths


def test_hot_when_only_model_paths_change() -> None:
    p = make_plan(spec(), spec(model__parameters={"t": 0.2}), hot_paths=HOT, can_restart=True)
    assert p.kind == "hot" and p.paths == ("model.parameters.t",)


def test_restart_when_runtime_changes_and_reason_names_every_path() -> None:
    p = make_plan(spec(), spec(runtime__image="img:v2", model__parameters={"t": 0.2}), hot_paths=HOT,
                  can_restart=True)
    assert p.kind == "restart" and p.paths == ("model.parameters.t", "runtime.image")
    assert str(p) == "restart (model.parameters.t, runtime.image)"


def test_restart_when_target_cannot_take_the_path() -> None:
    p = make_plan(spec(), spec(model__uri="file:///v2"), hot_paths=("model.adapters",), can_restart=True)
    assert p.kind == "restart"


def test_first_apply_pushes_everything() -> None:
    assert make_plan(None, spec(), hot_paths=HOT, can_restart=False).kind == "hot"
    assert make_plan(None, spec(), hot_paths=None, can_restart=True).kind == "restart"
    assert make_plan(None, spec(), hot_paths=HOT, can_restart=True).kind == "restart"  # has an image
    assert make_plan(None, spec(), hot_paths=None, can_restart=False).kind == "noop"
