"""The systemd runtime's EnvironmentFile: what render_env writes, parse_env reads back."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from watcher.core.childenv import EnvPolicy
from watcher.core.errors import RuntimeStartError
from watcher.core.spec import ModelSpec
from watcher.runtimes.systemd import parse_env, render_env


def spec(**env: str) -> ModelSpec:
    return ModelSpec.model_validate({"name": "qwen", "version": "v1.0.0", "model": {"uri": "x"},
                                     "runtime": {"env": env, "args": ["-v"]}})


def test_env_file_round_trip() -> None:
    env = parse_env(render_env(spec(A='say "hi" \\o/'), "rev1", EnvPolicy(allow=("A",)),
                               {"MODEL_WATCHER_SPEC_FILE": "/s"}))
    assert env["A"] == 'say "hi" \\o/'
    assert env["MODEL_WATCHER_REVISION"] == "rev1"
    assert env["MODEL_WATCHER_SPEC_FILE"] == "/s"
    assert json.loads(env["MODEL_WATCHER_ARGS"]) == ["-v"]


def test_bad_names_and_newlines_never_reach_the_file() -> None:
    """The document's grammar refuses them (core/grammar.py); what settings do not admit is
    refused here, before anything is written."""
    with pytest.raises(ValidationError, match="POSIX"):
        spec(**{"A-B": "1"})
    with pytest.raises(ValidationError, match="control character"):
        spec(A="1\n2")
    with pytest.raises(RuntimeStartError, match="A"):
        render_env(spec(A="1"), "r")  # the default policy admits no name
