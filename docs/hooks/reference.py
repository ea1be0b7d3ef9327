"""MkDocs hook: pages generated from the code at every build, so they cannot drift from it.

    index.md              README.md (its two commands, the document, the commands table)
    reference/cli.md      every command and option of `model-watcher` (watcher.cli's argparse)
    reference/settings.md every settings section and field (watcher.settings' pydantic models),
                          each plug-in kind's options (the model its `create` validates with)
                          and each feature section's model

A plug-in's options model is found in its own `create()` (`parse_options(Model, ...)`), and
every free-form section of `Settings` must have a model in FEATURE_MODELS: a plug-in or
section that cannot be documented fails the build (mkdocs build --strict in the tests).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
#: Free-form `Settings` sections (dict) -> the model their feature validates them with.
FEATURE_MODELS = {
    "webhook": "watcher.api.webhook:WebhookSettings",
    "alerts": "watcher.alerts:AlertSettings",
    "tracing": "watcher.observability.tracing_otel:TracingSettings",
    "weights": "watcher.fetchers.options:WeightsOptions",
    "fleet": "watcher.fleet.settings:FleetSettings",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# -- the CLI ------------------------------------------------------------------------------
def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | meaning |", "| --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest.upper()}`"
        if action.option_strings and action.nargs != 0:
            name += f" `{action.metavar or action.dest.upper()}`"
        text = (action.help or "").replace("%(default)s", str(action.default)).replace("|", "\\|")
        if action.choices:
            text += " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        if action.required and action.option_strings:
            text += " (required)"
        rows.append(f"| {name} | {text} |")
    return rows


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_page() -> str:
    from watcher.cli import build_parser

    parser = build_parser()
    helps = {a.dest: a.help for sub in parser._actions if isinstance(sub, argparse._SubParsersAction)
             for a in sub._choices_actions}
    out = ["# Command line reference", "",
           "Generated from `watcher.cli` at every docs build. Exit status: 0 success, 1 rejected"
           " or failed, 2 bad settings, 4 config center unreachable (`once`: 3 another daemon"
           " runs).", "", "## Global options", "", "```text", parser.format_usage().strip(), "```",
           "", *_options_table(parser), "",
           "Shell completion: `model-watcher completion bash` or `zsh` prints a script; see"
           " [Operations](../operations.md).", ""]
    for name, sub in subcommands(parser).items():
        out += [f"## `{name}`", "", helps.get(name) or "", "", "```text",
                sub.format_usage().strip(), "```", "", *_options_table(sub), ""]
    return "\n".join(out)


# -- the settings ---------------------------------------------------------------------------
def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "unset"
    text = json.dumps(value, default=str)  # TOML's spelling of true, lists, strings
    return f"`{text}`".replace("|", "\\|") if len(text) < 80 else "see the code"


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """`#:` comments above a field in the class body (what Sphinx's autodoc reads too)."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            m = re.match(r"(\w+)\s*:", stripped)
            if m and pending:
                out[m.group(1)] = " ".join(pending)
            pending = []
    return out


def _nested(annotation: Any) -> type[BaseModel] | None:
    """The model inside `Model`, `Model | None`, `dict[str, Model]`, `list[Model]`."""
    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
        inner = [a for a in typing.get_args(c) if isinstance(a, type) and issubclass(a, BaseModel)]
        if inner:
            return inner[0]
    return None


def model_table(model: type[BaseModel], path: str, env: bool = True) -> list[str]:
    """One table for `model` at settings path `path`, then one per nested model."""
    notes = _comments(model)
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        meaning = info.description or notes.get(name, "")
        if env and "." not in path.strip("."):
            var = f"MODEL_WATCHER_{path.upper()}__{name.upper()}" if path else f"MODEL_WATCHER_{name.upper()}"
            meaning = f"{meaning} (`{var}`)".strip()
        rows.append(f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | "
                    f"{meaning.replace('|', chr(92) + '|')} |")
        sub = _nested(info.annotation)
        if sub is not None:
            nested.append((f"{path}.{name}" if path else name, sub))
    out = [*rows, ""]
    for sub_path, sub in nested:
        out += [f"#### `[{sub_path}]`", "", *model_table(sub, sub_path, env=False)]
    return out


def plugin_model(group: str, kind: str) -> type[BaseModel]:
    """The options model a plug-in's `create()` validates with."""
    from watcher import plugins

    cls = plugins.load_class(group, kind)
    source = inspect.getsource(cls.create)
    m = re.search(r"parse_options\((\w+)", source)
    if m is None:
        raise RuntimeError(f"{group}.kind={kind}: {cls.__name__}.create does not call parse_options")
    model: type[BaseModel] = vars(sys.modules[cls.__module__])[m.group(1)]
    return model


def settings_page() -> str:
    from watcher import plugins
    from watcher.settings import PluginSection, Settings

    out = ["# Settings reference", "",
           "Generated from `watcher.settings` and each plug-in's options at every docs build. A",
           "TOML file (`--config`, else `/etc/model-watcher/watcher.toml`, else",
           "`./config/watcher.toml`), every key overridable by `MODEL_WATCHER_*` variables",
           "(nested with `__`; lists and tables as JSON, e.g.",
           "`MODEL_WATCHER_SOURCE__ENDPOINTS='[\"http://etcd:2379\"]'`). Secrets belong in the",
           "environment (docs/security.md).", "", "## Top level", ""]
    top = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    sections: list[str] = []
    for name, info in Settings.model_fields.items():
        sub = _nested(info.annotation)
        if sub is PluginSection:
            group = name if name in plugins.GROUPS else None
            assert group is not None, f"plug-in section [{name}] has no plug-in group"
            sections += [f"## `[{name}]`", "", "`kind` picks the plug-in: "
                         + ", ".join(f"`{k}`" for k in plugins.GROUPS[group]) + ".", ""]
            for kind in plugins.GROUPS[group]:
                sections += [f"### `kind = \"{kind}\"`", "",
                             *model_table(plugin_model(group, kind), name)]
        elif sub is not None:
            sections += [f"## `[{name}]`", "", *model_table(sub, name)]
        elif typing.get_origin(info.annotation) is dict:
            if name not in FEATURE_MODELS:
                raise RuntimeError(f"settings section [{name}] has no model in FEATURE_MODELS")
            sections += [f"## `[{name}]`", "", *model_table(_load(FEATURE_MODELS[name]), name)]
        else:
            top.append(f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | "
                       f"`MODEL_WATCHER_{name.upper()}` |")
    return "\n".join([*out, *top, "", *sections])


def index_page() -> str:
    """README.md, with links into docs/ made relative to the site."""
    text = (ROOT / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", text)


# -- the MkDocs hook ----------------------------------------------------------------------------
GENERATED = {"index.md": index_page, "reference/cli.md": cli_page,
             "reference/settings.md": settings_page}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for uri, make in GENERATED.items():
        files.append(File.generated(config, uri, content=make()))
    return files
