"""Bounded decoding of untrusted document text: YAML without aliases, strict JSON.

A document is decoded before anything can vouch for it (the signature covers the weights, not
the text), so decoding itself must be cheap and total: every input ends in a value or a
one-line DocumentError, never in another exception, never in unbounded memory or time.

    bytes      checked by the caller (spec.parse_document: reconcile.max_document_bytes)
    depth      at most MAX_DEPTH nested collections, refused while composing, before the
               recursive composer/constructor or json's C scanner can recurse further
    nodes      at most MAX_NODES scalars + collections, counted while composing (YAML)
               or by a linear pre-scan (JSON), before anything is built
    aliases    refused (`*name`): an alias bomb expands 9^n fold later (pydantic, JSON dumps);
               anchors alone are harmless and allowed; merge keys (`<<`) are refused
    keys       strings only, each at most once (Kubernetes-style strict decoding)
    scalars    int fits in 64 bits; float finite (no .nan/.inf, NaN/Infinity, 1e999);
               `!!binary`, `!!set`, `!!omap`, `!!pairs` refused; timestamps stay text
               (pydantic parses them where a field wants a date), so every value is what
               JSON can carry and `canonical()` / servers see the same thing

YAML events come from libyaml when PyYAML has it (5x faster than the pure scanner) and are
composed by PyYAML's own Python composer, which is where the limits hook in; without
libyaml the pure-Python parser is used with the same composer and constructor.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Hashable
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from watcher.core.errors import DocumentError
from watcher.core.grammar import check_json_value

MAX_DEPTH = 32
MAX_NODES = 5_000
_MAX_NUMBER_TEXT = 64  # an int64 has 20 characters; anything longer is not a number we take
_INT64 = 2**63
_MERGE = "tag:yaml.org,2002:merge"


def _at(node_or_event: Any) -> str:
    mark = getattr(node_or_event, "start_mark", None)
    return f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""


class _BoundedComposer(Composer):
    """PyYAML's composer with aliases refused and depth / node count bounded."""

    # provided by the parser half of the loader (pure Python Parser or libyaml's CParser)
    check_event: Callable[..., bool]
    peek_event: Callable[[], yaml.Event]
    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise DocumentError(f"YAML aliases are not allowed (*{getattr(event, 'anchor', '')}{_at(event)})")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise DocumentError(f"document has more than {MAX_NODES} values{_at(self.peek_event())}")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise DocumentError(f"document nests deeper than {MAX_DEPTH} levels{_at(self.peek_event())}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _StrictConstructor(SafeConstructor):
    """SafeConstructor producing only JSON-shaped values, with duplicate keys refused."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                raise DocumentError(f"YAML merge keys (<<) are not allowed{_at(key_node)}")
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise DocumentError(f"mapping key {str(key)[:40]!r}{_at(key_node)} is a "
                                    f"{type(key).__name__}, not a string (quote it)")
            if key in seen:
                raise DocumentError(f"duplicate key {key[:64]!r}{_at(key_node)}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _number_text(self, node: ScalarNode) -> None:
        if len(node.value) > _MAX_NUMBER_TEXT:
            raise DocumentError(f"number{_at(node)} is longer than {_MAX_NUMBER_TEXT} characters")

    def construct_yaml_int(self, node: ScalarNode) -> int:
        self._number_text(node)
        value = super().construct_yaml_int(node)
        if not -_INT64 <= value < _INT64:
            raise DocumentError(f"integer{_at(node)} does not fit in 64 bits")
        return value

    def construct_yaml_float(self, node: ScalarNode) -> float:
        self._number_text(node)
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise DocumentError(f"number {node.value[:20]!r}{_at(node)} is not finite "
                                "(NaN and Infinity are not allowed)")
        return value

    def keep_text(self, node: ScalarNode) -> str:
        return self.construct_scalar(node)

    def refuse_tag(self, node: Node) -> Any:
        raise DocumentError(f"YAML tag {node.tag.rsplit(':', 1)[-1]!r}{_at(node)} is not allowed")


_StrictConstructor.yaml_constructors = {
    **SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:int": _StrictConstructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _StrictConstructor.construct_yaml_float,
    # a timestamp stays text: pydantic parses it where a field wants a date
    "tag:yaml.org,2002:timestamp": _StrictConstructor.keep_text,
    **{f"tag:yaml.org,2002:{t}": _StrictConstructor.refuse_tag for t in ("binary", "set", "omap", "pairs")},
}


def _loader_classes() -> list[type[Any]]:
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class PyLoader(_BoundedComposer, Reader, Scanner, Parser, _StrictConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def dispose(self) -> None:
            return None

    classes: list[type[Any]] = [PyLoader]
    if getattr(yaml, "__with_libyaml__", False):
        from yaml._yaml import CParser

        class CLoader(_BoundedComposer, CParser, _StrictConstructor, Resolver):
            def __init__(self, stream: str) -> None:
                CParser.__init__(self, stream)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)

        # CParser composes in C; the Python composer (which holds the limits) must win.
        for name in ("get_single_node", "compose_document", "compose_scalar_node",
                     "compose_sequence_node", "compose_mapping_node", "check_node", "get_node"):
            setattr(CLoader, name, getattr(Composer, name))
        classes.insert(0, CLoader)
    return classes


#: The YAML loaders, fastest first; `load_yaml` uses the first, tests run every one.
LOADERS = _loader_classes()


def load_yaml(text: str, loader: type[Any] | None = None) -> Any:
    """One YAML document, bounded as the module says; DocumentError on anything else."""
    instance = (loader or LOADERS[0])(text)
    try:
        value = instance.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(f"invalid YAML{where}: {problem}") from None
    finally:
        instance.dispose()
    _check_value(value)
    return value


# -- JSON ---------------------------------------------------------------------------------

_OUTSIDE = re.compile(r'[\[\]{}",]')
_INSIDE = re.compile(r'["\\]')


def json_depth(text: str, limit: int, max_values: int | None = None) -> None:
    """Refuse nesting deeper than `limit` (and more than `max_values` values) before json's
    recursive scanner sees the text or builds anything. Linear, and it stops at the first
    excess, so its cost is bounded by the limits, not by the text: values are counted as
    containers + commas + 1 outside strings (exact when no container is empty)."""
    depth = pos = 0
    values = 1
    while (m := _OUTSIDE.search(text, pos)) is not None:
        pos = m.end()
        char = m.group()
        if char in ",[{":
            values += 1
            if max_values is not None and values > max_values:
                raise DocumentError(f"document has more than {max_values} values (character {m.start()})")
            if char == ",":
                continue
        if char == '"':
            while (s := _INSIDE.search(text, pos)) is not None:
                pos = s.end() + (1 if s.group() == "\\" else 0)
                if s.group() == '"':
                    break
            else:
                return  # unterminated string: json.loads says where
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise DocumentError(f"document nests deeper than {limit} levels (character {m.start()})")
        else:
            depth -= 1


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DocumentError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise DocumentError(f"{name} is not allowed (numbers must be finite)")


def _int(text: str) -> int:
    if len(text) > _MAX_NUMBER_TEXT or not -_INT64 <= (value := int(text)) < _INT64:
        raise DocumentError(f"integer {text[:24]}... does not fit in 64 bits")
    return value


def _float(text: str) -> float:
    if len(text) > _MAX_NUMBER_TEXT or not math.isfinite(value := float(text)):
        raise DocumentError(f"number {text[:24]} is not a finite number we accept")
    return value


def load_json(text: str) -> Any:
    """One JSON value: depth-bounded, duplicate keys and NaN/Infinity refused."""
    json_depth(text, MAX_DEPTH, MAX_NODES)
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant,
                           parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    _check_value(value)
    return value


def _check_value(value: Any) -> None:
    try:
        check_json_value(value, max_depth=MAX_DEPTH + 1, max_nodes=MAX_NODES)
    except ValueError as exc:
        raise DocumentError(str(exc)) from None


def load_text(text: str) -> Any:
    """JSON when the text opens with `{` or `[`, else YAML (JSON is YAML too, but stricter here)."""
    text = text.removeprefix("\ufeff")
    return load_json(text) if text.lstrip().startswith(("{", "[")) else load_yaml(text)
