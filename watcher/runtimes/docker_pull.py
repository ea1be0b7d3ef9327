"""The docker runtime's `prepare`: policy, pull with credentials, pin to the digest pulled.

The pin of (model, version, image) is remembered in `state_dir/docker-pins.json`; a later
prepare of the same triple pulls by that digest, so a rollback re-runs exactly what ran
before even if the tag has moved since. A `-dev` tag or version is refused in production;
an image that has no digest after the pull is refused while `require_digest` holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

from watcher.core.errors import PolicyError, RuntimeStartError
from watcher.core.spec import ModelSpec, Version
from watcher.runtimes import engine as eng

log = logging.getLogger("watcher.runtimes.docker")


class Puller:
    def __init__(self, engine: eng.EngineClient, auth: eng.RegistryAuth | None, state_dir: Path,
                 environment: str, *, timeout: float, require_digest: bool = True) -> None:
        self.engine = engine
        self.auth = auth
        self.environment = environment
        self.timeout = timeout
        self.require_digest = require_digest
        self.path = state_dir / "docker-pins.json"
        #: Also told about pull progress (the `pull` command's progress bar).
        self.on_progress: eng.ProgressCallback | None = None

    async def prepare(self, spec: ModelSpec) -> str:
        """Pull `spec`'s image and return the digest reference it runs as."""
        image = self.check(spec)
        key = pin_key(spec)
        pinned = self.pins().get(key)
        started = time.monotonic()
        try:
            progress = await self.engine.pull(
                pinned or image, auth=self.auth, timeout=self.timeout,
                on_progress=progress_logger(spec.name, self.on_progress))
            ref = pinned or await self._pin(image, progress)
        except eng.EngineError as exc:
            raise RuntimeStartError(f"{spec.name}: {exc}") from exc
        log.info("%s: pulled %s in %.1fs, runs as %s", spec.name, image,
                 time.monotonic() - started, ref, extra={"model": spec.name})
        if pinned is None:
            self._save(key, ref)
        return ref

    def check(self, spec: ModelSpec) -> str:
        """The image to pull; RuntimeStartError when absent, PolicyError for dev builds in
        production (policy.py checks channels too; this holds even without it)."""
        image = spec.runtime.image
        if not image:
            raise RuntimeStartError(f"{spec.name}: runtime.image is required by the docker runtime")
        _, tag, _ = eng.split_reference(image)
        if self.environment == "production":
            for what in (tag, spec.version):
                with contextlib.suppress(ValueError):
                    if what and Version(what).channel == "dev":
                        raise PolicyError(f"{spec.name}: {what!r} is a dev build, refused in "
                                          "production")
        return image

    async def _pin(self, image: str, progress: eng.PullProgress) -> str:
        """`repo@sha256:…` for what was just pulled; PolicyError when no digest is known."""
        repo, _, digest = eng.split_reference(image)
        digest = digest or progress.digest
        if digest is None:
            info = await self.engine.image_inspect(image)
            found = sorted(d for d in info.get("RepoDigests") or [] if d.startswith(repo + "@"))
            if len(found) > 1:
                log.warning("%s has several digests here (%s); pinning the first", image, found)
            digest = found[0].partition("@")[2] if found else None
        if not digest:
            if self.require_digest:
                raise PolicyError(f"image {image} is not pinned to a digest after pull")
            return image
        return f"{repo}@{digest}"

    def pinned(self, spec: ModelSpec) -> str | None:
        return self.pins().get(pin_key(spec))

    def pins(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def _save(self, key: str, ref: str) -> None:
        pins = {**self.pins(), key: ref}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pins, indent=1, sort_keys=True))
        tmp.replace(self.path)


def pin_key(spec: ModelSpec) -> str:
    return f"{spec.name}|{spec.version}|{spec.runtime.image}"


def progress_logger(model: str, also: eng.ProgressCallback | None) -> eng.ProgressCallback:
    """Log pull progress at most every 2 s; pass every update on to `also`."""
    last = [0.0]

    def report(p: eng.PullProgress) -> None:
        if also is not None:
            also(p)
        now = time.monotonic()
        if now - last[0] < 2.0:
            return
        last[0] = now
        pct = f"{100 * p.current / p.total:.0f}%" if p.total else f"{len(p.done)}/{len(p.seen)} layers"
        log.info("%s: pulling %s: %s %s", model, p.image, pct, p.status, extra={"model": model})

    return report
