"""The container's HEALTHCHECK: exit 0 while the daemon's API answers GET /healthz with 200.

Standard library only and no import of the daemon: it runs every 15 s, and importing the
settings models (pydantic) would cost more CPU than the check itself. The listener's address
is resolved the way the daemon's settings resolve it (tests/unit/deploy/test_healthcheck.py
holds it to `watcher.settings.load_settings`): MODEL_WATCHER_API__HOST/PORT, else `[api]` of
/etc/model-watcher/watcher.toml (the image runs the daemon without --config, so that is
the file it reads when one is mounted), else the defaults. A wildcard listener (0.0.0.0, ::) is probed on loopback.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.request
from collections.abc import Mapping
from pathlib import Path

DEFAULT_FILE = "/etc/model-watcher/watcher.toml"
WILDCARDS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - recognised, never bound


def api_address(env: Mapping[str, str], settings_file: Path) -> tuple[str, int]:
    """(host, port) of the API listener as the daemon would bind it."""
    api: dict[str, object] = {}
    if settings_file.is_file():
        with settings_file.open("rb") as f:
            section = tomllib.load(f).get("api", {})
        if isinstance(section, dict):
            api = section
    host = str(env.get("MODEL_WATCHER_API__HOST") or api.get("host") or "127.0.0.1")
    port = int(env.get("MODEL_WATCHER_API__PORT") or str(api.get("port") or 9464))
    return host, port


def probe_url(host: str, port: int) -> str:
    if host in WILDCARDS:
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main() -> int:
    url = probe_url(*api_address(os.environ, Path(DEFAULT_FILE)))
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:  # noqa: S310 - our own loopback URL
            ok = resp.status == 200
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
