"""An out-of-tree target, written by following docs/extending.md ("Add a target").

For servers that load their models from a directory they watch themselves: each model's
`model` section is written there as `<name>.json` (atomically, so the server never reads
half a file), and removed when the document is deleted.

Use it with `[target] kind = "examples.plugins.directory_target:DirectoryTarget"`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from watcher.core.errors import TargetError
from watcher.core.spec import ModelSpec
from watcher.fsutil import write_atomically
from watcher.plugins import PluginContext, parse_options


class DirectoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path


class DirectoryTarget:
    hot_paths = ("model.",)

    def __init__(self, options: DirectoryOptions) -> None:
        self.options = options

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> DirectoryTarget:
        return cls(parse_options(DirectoryOptions, options, "target"))

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        body = json.dumps(spec.canonical()["model"], indent=2, sort_keys=True).encode()
        try:
            write_atomically(self.options.path / f"{spec.name}.json", body)
        except OSError as exc:
            raise TargetError(f"cannot write {self.options.path}: {exc.strerror}") from exc

    async def remove(self, name: str) -> None:
        (self.options.path / f"{name}.json").unlink(missing_ok=True)

    async def aclose(self) -> None:
        return None
