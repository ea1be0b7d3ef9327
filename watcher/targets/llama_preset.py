"""What the `llama-server` target writes: staged GGUF files, the router's preset, its ledger.

Everything here turns an untrusted document into bytes llama-server reads, so every value is
checked for the grammar of where it goes:

- file names are never taken from the document: weights and adapters are copied to
  `MODELS_DIR/<model>/<kind>-<sha256[:16]>.gguf` (the model name matches `[a-z0-9][a-z0-9._-]*`,
  adapter names `[A-Za-z0-9][A-Za-z0-9._-]*`), hashed while copied and compared with the
  document's sha256, so the bytes loaded are the bytes verified;
- preset values are absolute paths made only of `[A-Za-z0-9/._-]` (no `:` or `,`, which
  `--lora-scaled` splits on; no `;`, `#`, `=`, `[` or a newline, which the INI parser reads)
  and numbers formatted here;
- LoRA scales are finite floats in [-MAX_SCALE, MAX_SCALE].

The preset is rendered whole from the ledger (one JSON file per model under the daemon's state
dir) on every change, so a daemon restart writes exactly what it wrote before.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.core.errors import TargetError
from watcher.core.spec import ModelSpec
from watcher.core.verify import local_path
from watcher.fsutil import write_atomically

SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._-]+$")
GGUF_MAGIC = b"GGUF"
MAX_SCALE = 10.0
#: model.parameters keys this target understands (anything else is a typo to refuse).
PARAMETERS = frozenset({"adapter_scales"})
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class AdapterFile:
    name: str
    path: str
    scale: float


@dataclass(frozen=True)
class Generation:
    """One set of files an instance serves: the weights and the adapters with their scales."""

    model: str
    adapters: tuple[AdapterFile, ...] = ()

    def files(self) -> set[str]:
        return {self.model, *(a.path for a in self.adapters)}

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model,
                "adapters": [[a.name, a.path, a.scale] for a in self.adapters]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Generation:
        return cls(str(data["model"]),
                   tuple(AdapterFile(str(n), str(p), float(s)) for n, p, s in data["adapters"]))


def check_path(path: Path | str, what: str) -> str:
    text = str(path)
    if not SAFE_PATH.fullmatch(text) or "/../" in f"{text}/":
        raise TargetError(f"{what} {text!r}: only absolute paths of [A-Za-z0-9/._-] can go into "
                          "llama-server's preset")
    return text


def adapter_scales(spec: ModelSpec) -> dict[str, float]:
    """The scale of every adapter of `spec` (default 1.0), from `model.parameters.adapter_scales`."""
    params = spec.model.parameters
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise TargetError(f"model.parameters.{unknown[0]} is not a llama-server target parameter "
                          f"(known: {', '.join(sorted(PARAMETERS))})")
    if spec.model.implementation is not None:
        raise TargetError("model.implementation has no meaning for llama-server (a GGUF file says "
                          "its own architecture); remove it")
    raw = params.get("adapter_scales", {})
    if not isinstance(raw, dict):
        raise TargetError("model.parameters.adapter_scales must be a mapping adapter name -> scale")
    names = {a.name for a in spec.model.adapters}
    scales: dict[str, float] = {}
    for name, value in raw.items():
        if name not in names:
            raise TargetError(f"model.parameters.adapter_scales.{name}: no such adapter in model.adapters")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or abs(value) > MAX_SCALE:
            raise TargetError(f"model.parameters.adapter_scales.{name}: {value!r} is not a number "
                              f"in [-{MAX_SCALE:g}, {MAX_SCALE:g}]")
        scales[name] = float(value)
    return {a.name: scales.get(a.name, 1.0) for a in spec.model.adapters}


def source_file(uri: str, what: str) -> Path:
    path = local_path(uri)
    if path is None:
        raise TargetError(f"{what} {uri!r}: llama-server loads local GGUF files only "
                          "(file:// URI or absolute path)")
    if not path.is_file():
        raise TargetError(f"{what} {uri}: no such file")
    return path


def stage_file(src: Path, dest_dir: Path, kind: str, expected: str | None) -> Path:
    """Copy `src` to `dest_dir/<kind>-<sha16>.gguf`, hashing the bytes copied (blocking).

    The copy, not the source, is what llama-server loads: the digest is checked on it, so a
    file changed after verification (or a document whose digest lies) never gets loaded.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{kind}.{os.getpid()}.partial"
    digest = hashlib.sha256()
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            head = fin.read(len(GGUF_MAGIC))
            if head != GGUF_MAGIC:
                raise TargetError(f"{src}: not a GGUF file (starts with {head!r})")
            digest.update(head)
            fout.write(head)
            while chunk := fin.read(CHUNK):
                digest.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise TargetError(f"{src}: the copy staged for llama-server hashes to {actual[:12]}..., "
                              f"the document says {expected[:12]}... (file changed after verification?)")
        dest = dest_dir / f"{kind}-{actual[:16]}.gguf"
        tmp.replace(dest)
        return dest
    except OSError as exc:
        raise TargetError(f"staging {src} into {dest_dir}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _scale(value: float) -> str:
    return f"{value:.6g}"


def render(served: Mapping[str, Generation], *, load_on_startup: bool,
           stop_timeout: int | None) -> str:
    """The whole preset: one section per served model, named as clients call it. Sorted, so
    equal state gives equal bytes (the router reloads only sections whose options changed)."""
    lines = ["; written by model-watcher (llama-server target): edits are overwritten",
             "version = 1", ""]
    for name in sorted(served):
        gen = served[name]
        lines.append(f"[{name}]")
        lines.append(f"model = {check_path(gen.model, 'model file')}")
        if gen.adapters:
            lines.append("lora-scaled = " + ",".join(
                f"{check_path(a.path, 'adapter file')}:{_scale(a.scale)}" for a in gen.adapters))
        if load_on_startup:
            lines.append("load-on-startup = true")
        if stop_timeout is not None:
            lines.append(f"stop-timeout = {int(stop_timeout)}")
        lines.append("")
    return "\n".join(lines)


class Ledger:
    """Per model, the generation served and the one before it (kept for a quick rollback)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "llama-server"
        self.served: dict[str, Generation] = {}
        self.previous: dict[str, Generation] = {}
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else ():
            try:
                data = json.loads(path.read_text())
                self.served[path.stem] = Generation.from_json(data["served"])
                if data.get("previous"):
                    self.previous[path.stem] = Generation.from_json(data["previous"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise TargetError(f"{path}: unreadable llama-server ledger ({exc!r})") from exc

    def set(self, name: str, gen: Generation | None, previous: Generation | None) -> None:
        """Record (or with `gen=None` forget) what `name` serves; blocking (a file write)."""
        path = self.dir / f"{name}.json"
        if gen is None:
            self.served.pop(name, None)
            self.previous.pop(name, None)
            path.unlink(missing_ok=True)
            return
        self.served[name] = gen
        if previous is None:
            self.previous.pop(name, None)
        else:
            self.previous[name] = previous
        body = {"served": gen.to_json(), "previous": previous.to_json() if previous else None}
        write_atomically(path, json.dumps(body, indent=1).encode())
