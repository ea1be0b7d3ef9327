"""A container image made from Debian's packages: `mmdebstrap` builds a root filesystem
tarball, `podman import` makes it an image. These machines cannot pull a public image, so
every image the tests boot or build FROM starts here.

Cached under the test cache, keyed on the suite, the package list, the options and the hooks:
the tarball (CACHE/NAME/rootfs-KEY.tar) and the imported image in a podman storage of its
own (CACHE/NAME/podman). A fresh machine pays mmdebstrap (1-3 min, mostly downloads) and the
import (10-15 s); a warm one nothing. An image or tarball of an older key is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.infra.common import require_binary
from tests.infra.podman import PodmanEnv

HINT = "Debian package mmdebstrap (scripts/deps/60-systemd.sh)"


class RootfsImage:
    """`localhost/NAME:KEY`, built once per key; `ensure()` returns the reference."""

    def __init__(self, cache: Path, name: str, packages: Sequence[str], *,
                 hooks: Sequence[str] = (), variant: str = "apt", options: Sequence[str] = (),
                 suite: str = "bookworm", changes: Sequence[str] = (),
                 podman: PodmanEnv | None = None) -> None:
        self.cache = cache
        self.name = name
        self.packages = tuple(packages)
        self.hooks = tuple(hooks)
        self.variant = variant
        self.options = tuple(options)
        self.suite = suite
        #: Dockerfile instructions applied by `podman import --change` (ENV, CMD, ...)
        self.changes = tuple(changes)
        self.key = self.cache_key()
        self.tar = cache / f"rootfs-{self.key}.tar"
        self.podman = podman or PodmanEnv(cache / "podman")
        self.ref = f"localhost/{name}:{self.key}"
        self.timings: dict[str, float] = {}

    def cache_key(self) -> str:
        data: dict[str, object] = {"suite": self.suite, "packages": self.packages,
                                   "hooks": self.hooks}
        if self.variant != "apt" or self.options or self.changes:
            # only then: the systemd host's key (made before these existed) stays as it was
            data.update(variant=self.variant, options=self.options, changes=self.changes)
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:12]

    def ensure(self) -> str:
        if self._exists():
            return self.ref
        if not self.tar.exists():
            self._build()
        t0 = time.monotonic()
        changes = [a for c in self.changes for a in ("--change", c)]
        self.podman.cli("import", "--quiet", *changes, str(self.tar), self.ref, timeout=600)
        self.timings["podman import"] = time.monotonic() - t0
        stale = self.podman.cli("images", "--format", "{{.Repository}}:{{.Tag}}",
                                "--filter", f"reference=localhost/{self.name}", check=False)
        for ref in stale.split():
            if ref != self.ref:  # built from an older package list
                self.podman.cli("rmi", "--force", ref, check=False, timeout=120)
        return self.ref

    def _exists(self) -> bool:
        proc = subprocess.run([self.podman.binary, "image", "exists", self.ref],
                              env={**os.environ, **self.podman.env}, capture_output=True, timeout=60)
        return proc.returncode == 0

    def _build(self) -> None:
        mmdebstrap = require_binary("mmdebstrap", HINT)
        self.cache.mkdir(parents=True, exist_ok=True)
        partial = self.tar.with_suffix(f".{os.getpid()}.partial")
        argv = [mmdebstrap, "--quiet", f"--variant={self.variant}", *self.options, "--format=tar",
                "--include=" + ",".join(self.packages),
                *(f"--customize-hook={h}" for h in self.hooks), self.suite, str(partial)]
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap exited {proc.returncode}: {proc.stderr[-2000:]}")
        partial.replace(self.tar)  # atomic: a concurrent session sees all of it or nothing
        self.timings["mmdebstrap"] = time.monotonic() - t0
        for old in self.cache.glob("rootfs-*.tar"):
            if old != self.tar:
                old.unlink(missing_ok=True)
