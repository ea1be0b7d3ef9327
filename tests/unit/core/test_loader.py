"""The bounded decoder (watcher/core/loader.py): every hostile text ends in a DocumentError with
a one-line reason, never another exception, and costs a bounded amount of memory.

Each YAML case runs through every loader class this machine has (libyaml events + Python
composer, and the pure-Python parser), so the fallback is tested too.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from watcher.core import loader
from watcher.core.errors import DocumentError
from watcher.core.spec import parse_document

LOADERS = pytest.mark.parametrize("cls", loader.LOADERS, ids=lambda c: c.__name__)


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs in ~500 bytes: 9^levels strings once expanded."""
    lines = ["name: demo", "version: v1.0.0", "model:", "  uri: file:///srv/m", "  parameters:",
             "    a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"    {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n"


def test_both_loaders_are_present_here() -> None:
    # CI's PyYAML wheel bundles libyaml; if it ever does not, the pure parser is used.
    assert [c.__name__ for c in loader.LOADERS][-1] == "PyLoader"


@LOADERS
def test_valid_yaml_gives_plain_json_values(cls: type[Any]) -> None:
    text = ("name: m\nversion: v1.0.0\nmodel:\n  uri: file:///m\n  parameters:\n"
            "    t: 0.5\n    n: 12\n    ok: true\n    none: null\n    stop: [a, 'b']\n"
            "metadata:\n  created_at: 2026-11-28T12:00:00Z\n")
    value = loader.load_yaml(text, cls)
    assert value["model"]["parameters"] == {"t": 0.5, "n": 12, "ok": True, "none": None,
                                            "stop": ["a", "b"]}
    assert value["metadata"]["created_at"] == "2026-11-28T12:00:00Z"  # text, for pydantic


@LOADERS
@pytest.mark.parametrize(("text", "reason"), [
    ("a: &x [1]\nb: *x\n", "aliases are not allowed"),
    ("a: {b: 1}\nc:\n  <<: {b: 2}\n", "merge keys"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a'"),
    ("a: {b: 1, b: 2}\n", "duplicate key 'b'"),
    ("'a': 1\na: 2\n", "duplicate key 'a'"),
    ("1: x\n", "not a string"),
    ("on: x\n", "is a bool, not a string"),
    ("? [a, b]\n: c\n", "not a string"),
    ("a: .nan\n", "not finite"),
    ("a: -.inf\n", "not finite"),
    ("a: 1.0e+999\n", "not finite"),
    ("a: 9223372036854775808\n", "64 bits"),
    ("a: 0x" + "f" * 40 + "\n", "64 bits"),
    ("a: 0x" + "f" * 70 + "\n", "longer than 64"),
    ("a: " + "9" * 5000 + "\n", "longer than 64"),
    ("a: 1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19:20:21:22:23:24:25:26:27:28:29\n",
     "longer than 64"),
    ("a: !!binary aGVsbG8=\n", "tag 'binary'"),
    ("a: !!set {x, y}\n", "tag 'set'"),
    ("a: !!omap [x: 1]\n", "tag 'omap'"),
    ("a: !!python/object:os.system x\n", "invalid YAML"),
    ("a: !custom x\n", "invalid YAML"),
    ('a: "\\x1b[2J"\n', "control character"),
    ('a: "\\0"\n', "control character"),
    ('a: "\\ud800"\n', "control character|invalid YAML"),
    ("a: 1\n---\nb: 2\n", "invalid YAML"),
    ("a: [1, 2\n", "invalid YAML"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "deeper than 32"),
    ("a: " + "[" * 5000 + "\n", "deeper than 32|maximum nesting depth"),
    ("a:\n" + "".join(f"  - {i}\n" for i in range(5_001)), "more than 5000 values"),
])
def test_hostile_yaml_is_refused(cls: type[Any], text: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason) as err:
        loader.load_yaml(text, cls)
    assert "\n" not in err.value.reason


@LOADERS
def test_the_alias_bomb_is_refused_at_the_first_alias(cls: type[Any]) -> None:
    text = alias_bomb(9)
    assert len(text) < 600
    with pytest.raises(DocumentError, match=r"aliases are not allowed \(\*a at line 7"):
        loader.load_yaml(text, cls)


@pytest.mark.parametrize(("text", "reason"), [
    ('{"a": NaN}', "NaN is not allowed"),
    ('{"a": -Infinity}', "-Infinity is not allowed"),
    ('{"a": 1e999}', "not a finite number"),
    ('{"a": 9223372036854775808}', "64 bits"),
    ('{"a": ' + "9" * 5000 + "}", "64 bits"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": {"b": 1, "b": 1}}', "duplicate key 'b'"),
    ('{"a": "\\u0000"}', "control character"),
    ('{"a": "\\udc00"}', "control character"),
    ("[" * 100_000, "deeper than 32"),
    ('{"a": ' * 33 + "1" + "}" * 33, "deeper than 32"),
    ('{"a": [' + ",".join(["0"] * 5_001) + "]}", "more than 5000 values"),
    ('{"a": "unterminated', "invalid JSON"),
    ('{"a": 1} {"b": 2}', "invalid JSON"),
])
def test_hostile_json_is_refused(text: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        loader.load_json(text)


def test_json_value_count_is_exact_at_the_limit() -> None:
    doc = '{"a": [' + ",".join(["0"] * (loader.MAX_NODES - 2)) + ']}'  # object + list + items
    assert len(loader.load_json(doc)["a"]) == loader.MAX_NODES - 2
    with pytest.raises(DocumentError, match="more than"):
        loader.load_json('{"a": [' + ",".join(["0"] * (loader.MAX_NODES - 1)) + ']}')
    assert loader.load_json('{"s": "' + "," * 100_000 + '"}')["s"].startswith(",")  # not values


def test_json_depth_scan_ignores_brackets_inside_strings() -> None:
    text = '{"a": "' + "[{" * 1000 + '\\"' + "]}" * 1000 + '"}'
    assert loader.load_json(text)["a"].startswith("[{")


def test_json_depth_scan_is_linear_on_escape_runs() -> None:
    # `"\"\"\"...` unterminated: a regex tokenizer restarting at each quote is quadratic here.
    loader.json_depth('"' + '\\"' * 200_000, 32)


@pytest.mark.parametrize("text", [
    alias_bomb(9),
    "a:\n" + "".join(f"  - {i}\n" for i in range(20_000)),
    "a: " + "[" * 200_000,
    '{"a": [' + ",".join(["{}"] * 80_000) + "]}",
    "a: '" + "x" * 250_000 + "'\n",
])
def test_worst_case_documents_cost_little_memory(text: str) -> None:
    """Peak Python allocation of refusing a 256 KiB worst case stays under 8 MiB (measured <= 2)."""
    raw = text.encode()[: 256 * 1024]
    tracemalloc.start()
    try:
        with pytest.raises(DocumentError):
            parse_document(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB"
