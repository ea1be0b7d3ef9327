"""Headless Chromium (Debian `chromium`) for page tests: the rendered DOM and a screenshot.

Flags as these machines need them: no sandbox (root), no GPU, and none of Chromium's own
background connections (this network refuses them, many at a time), a fresh profile each run.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.infra.common import require_binary

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def _run(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    binary = require_binary("chromium", "Debian package chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=timeout, check=True)


def dom(url: str) -> str:
    """The page's DOM after Chromium rendered it."""
    return _run(url, "--dump-dom").stdout


def screenshot(url: str, path: Path, size: str = "1280,900") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(url, f"--screenshot={path}", f"--window-size={size}")
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path
