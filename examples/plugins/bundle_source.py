"""An out-of-tree source, written by following docs/extending.md ("Add a source").

A *bundle*: one JSON file mapping each model's name to its document, as some CMDBs and
release tools export. The file is polled: when its mtime moves, the keys whose document
changed are reported. It has no position to resume from, so after an outage the session
takes a fresh snapshot (`resumable = False`).

Use it with `[source] kind = "examples.plugins.bundle_source:BundleSource"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from watcher.core.errors import SourceUnavailable
from watcher.plugins import PluginContext, parse_options
from watcher.sources.base import Batch, Change, SessionOptions, Snapshot


class BundleOptions(SessionOptions):
    path: Path
    poll_interval: float = Field(1.0, gt=0, description="how often the file's mtime is looked at")


class BundleSource:
    name = "bundle"
    resumable: ClassVar[bool] = False

    def __init__(self, options: BundleOptions) -> None:
        self.options = options
        self._seen: dict[str, str] = {}
        self._mtime = 0.0
        self._generation = 0

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> BundleSource:
        return cls(parse_options(BundleOptions, options, "source"))

    def _read(self) -> dict[str, Change]:
        try:
            self._mtime = self.options.path.stat().st_mtime
            data = json.loads(self.options.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"bundle {self.options.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise SourceUnavailable(f"bundle {self.options.path}: not a JSON object")
        out = {}
        for key, doc in data.items():
            content = str(doc).encode()
            out[str(key)] = Change(str(key), hashlib.sha256(content).hexdigest()[:16], content)
        return out

    async def snapshot(self) -> Snapshot:
        docs = self._read()
        self._seen = {k: c.revision for k, c in docs.items()}
        self._generation += 1
        return Snapshot(docs, self._generation)

    async def changes(self, cursor: int) -> AsyncIterator[Batch]:
        while True:
            await asyncio.sleep(self.options.poll_interval)
            if self.options.path.stat().st_mtime == self._mtime:
                continue
            docs = self._read()
            batch = [c for k, c in docs.items() if self._seen.get(k) != c.revision]
            batch += [Change.deletion(k) for k in self._seen if k not in docs]
            self._seen = {k: c.revision for k, c in docs.items()}
            if batch:
                yield Batch(batch, cursor)

    async def check(self) -> None:
        if not self.options.path.is_file():
            raise SourceUnavailable(f"bundle {self.options.path} does not exist")

    async def aclose(self) -> None:
        return None
