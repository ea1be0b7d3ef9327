"""The house reads at a glance, and stays so: packages by concern, modules under 300 lines,
the reconciler under 250, no import cycles, features typed. Checked on every run, so a
change that breaks one of these fails here, not in a reviewer's eye."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "watcher"


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def test_no_module_over_300_lines_and_the_reconciler_under_250() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert not {n: s for n, s in sizes.items() if s > 300}
    assert sizes["watcher.core.reconciler"] <= 250


def test_no_import_cycle() -> None:
    mods = modules()
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        for node in ast.parse(path.read_text()).body:  # module level; TYPE_CHECKING excluded
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("watcher"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in mods else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in mods or nxt == node:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in mods:
        if name not in state:
            visit(name)
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_features_get_a_typed_context() -> None:
    from watcher.features import FEATURES

    for name in FEATURES:
        path = modules()[name]
        serve = next(n for n in ast.parse(path.read_text()).body
                     if isinstance(n, ast.AsyncFunctionDef) and n.name == "serve")
        assert ast.unparse(serve.args.args[0].annotation) == "FeatureContext", name
