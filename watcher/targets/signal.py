"""`signal` target: write the spec where the server reads it, then signal its master.

gunicorn reloads its workers on SIGHUP: new workers read the new config while the old ones
finish their requests, so nothing is dropped. The spec is written atomically (temp file and
rename) before the signal, so a worker never reads half a file; it is 0600 (the server runs
as the daemon's user or reads it through a group the operator sets up), since a spec may
carry tokens in `parameters` or `runtime.env`.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.errors import TargetError
from watcher.core.spec import ModelSpec
from watcher.fsutil import write_atomically
from watcher.placeholders import fill
from watcher.plugins import PluginContext, parse_options


class SignalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pidfile: Path
    signal: str = Field("SIGHUP", pattern=r"^SIG[A-Z0-9]+$")
    spec_file: Path | None = Field(None, description="write the spec here (JSON); {model} allowed")
    hot_paths: tuple[str, ...] = ("model.",)


class SignalTarget:
    def __init__(self, options: SignalOptions) -> None:
        self.options = options
        self.hot_paths = options.hot_paths
        try:
            self._signal = signal.Signals[options.signal]
        except KeyError:
            raise TargetError(f"unknown signal {options.signal}") from None

    @classmethod
    def create(cls, options: Mapping[str, Any], ctx: PluginContext) -> SignalTarget:
        return cls(parse_options(SignalOptions, options, "target"))

    def _pid(self) -> int:
        try:
            text = self.options.pidfile.read_text().strip()
            return int(text)
        except FileNotFoundError:
            raise TargetError(f"pidfile {self.options.pidfile} does not exist") from None
        except ValueError:
            raise TargetError(f"pidfile {self.options.pidfile} holds no pid") from None

    async def apply(self, spec: ModelSpec, previous: ModelSpec | None) -> None:
        if self.options.spec_file is not None:
            path = Path(fill(str(self.options.spec_file), spec.name))
            write_atomically(path, json.dumps(spec.canonical(), indent=2).encode(), mode=0o600)
        pid = self._pid()
        try:
            os.kill(pid, self._signal)
        except ProcessLookupError:
            raise TargetError(f"no process {pid} (from {self.options.pidfile})") from None
        except PermissionError:
            raise TargetError(f"not allowed to signal process {pid}") from None

    async def remove(self, name: str) -> None:
        return None

    async def aclose(self) -> None:
        return None
