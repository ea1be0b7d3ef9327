"""Strategies and seeds shared by the fuzz properties."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.integration.hostile.cases import cases, valid

#: text with everything a hostile writer could put in: controls, NUL, surrogates, RTL marks
hostile_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=24) | st.sampled_from([
    "", "=", "A=B", "..", "../../etc", "%2e%2e", "\x00", "\x1b[2J", "\ud800", "\u202e", "nan", "NaN",
    "Infinity", "-inf", "1e999", "9" * 30, "LD_PRELOAD", "PATH", "MODEL_WATCHER_SPEC_FILE",
    "file:///etc/passwd", "http://169.254.169.254/", "@evil/x", "//evil/x", "v1.2.3-hotfix-dev",
])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text,
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(hostile_text, children, max_size=5),
    max_leaves=30,
)

#: every place of a document a value can go (dotted paths into `valid()`)
PATHS = [
    "name", "version", "runtime", "runtime.image", "runtime.env", "runtime.env.SERVER_FLAVOR",
    "runtime.args", "runtime.ports", "runtime.labels", "model", "model.uri", "model.sha256",
    "model.signature", "model.implementation", "model.parameters", "model.parameters.temperature",
    "model.adapters", "metadata", "metadata.model_id", "metadata.metrics", "metadata.created_at",
    "metadata.labels", "health", "health.path", "health.period", "health.failure_threshold",
]
ROOT = Path("/srv/fuzz-weights")


def base_document() -> dict[str, Any]:
    return valid(ROOT, 1)


def set_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = doc
    *parents, last = path.split(".")
    for p in parents:
        child = node.get(p)
        if not isinstance(child, dict):
            child = node[p] = {}
        node = child
    node[last] = value
    return doc


def dump(doc: Any, fmt: str) -> bytes:
    if fmt == "json":
        return json.dumps(doc).encode()
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def seeds() -> list[bytes]:
    """Valid documents in both formats plus every hostile case (the corpus mutations start from)."""
    with tempfile.TemporaryDirectory() as d:
        hostile = [c.content for c in cases(Path(d)) if len(c.content) < 64 * 1024]
    return [dump(base_document(), "yaml"), dump(base_document(), "json"), *hostile]
