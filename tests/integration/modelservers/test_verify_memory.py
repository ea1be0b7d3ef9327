"""Verifying 1 GiB of (sparse) weights streams: the process's peak memory barely moves."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.infra.common import ROOT
from watcher.core import verify


def test_sparse_gigabyte_costs_no_memory(tmp_path: Path) -> None:
    """1 GiB of sparse weights verified in a fresh interpreter: peak RSS grows < 8 MiB."""
    big = tmp_path / "sparse.bin"
    with big.open("wb") as f:
        f.truncate(1024**3)
    digest = hashlib.sha256()
    zeros = bytes(verify.CHUNK)
    for _ in range(1024):
        digest.update(zeros)
    script = textwrap.dedent(f"""
        import asyncio, json
        from watcher.core import verify
        from watcher.settings import TrustSettings
        from watcher.core.spec import ModelSpec

        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1])

        spec = ModelSpec.model_validate({{"name": "big", "version": "v1.0.0",
            "model": {{"uri": {big.as_uri()!r}, "sha256": {digest.hexdigest()!r}}}}})
        asyncio.run(asyncio.sleep(0))  # warm the loop machinery before the baseline
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        before = status("VmHWM")
        result = asyncio.run(verify.verify_spec(spec, TrustSettings()))
        print(json.dumps({{"ok": result.digest_checked, "before": before,
                          "peak": status("VmHWM")}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    figures = json.loads(out)
    growth_kib = figures["peak"] - figures["before"]
    print(f"1 GiB sparse verify: peak RSS growth {growth_kib} KiB")
    assert figures["ok"]
    assert growth_kib < 8 * 1024
