"""Fuzz verify_spec over paths a document can name: symlink loops, FIFOs, devices, names too
long, links out of the allowed root, `..`. The only outcome besides acceptance is a
VerificationError, within a few seconds (a FIFO or /dev/zero must not hold the apply).

Crashes found, pinned as @example seeds (they failed before the fix in verify.py/digest.py):
- a symlink loop: Path.resolve() raised RuntimeError;
- a name over 255 bytes: exists() raised OSError(ENAMETOOLONG);
- a FIFO as the weights file: open() blocked the hashing thread forever;
- /dev/zero as the weights file: hashed forever.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import examples
from watcher.core import verify
from watcher.core.errors import VerificationError
from watcher.core.spec import ModelSpec
from watcher.settings import TrustSettings


def _tree() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mw-fuzz-verify-"))
    (root / "file.bin").write_bytes(b"weights")
    (root / "dir").mkdir()
    (root / "dir" / "a.bin").write_bytes(b"a")
    (root / "loop").symlink_to(root / "loop")
    os.mkfifo(root / "fifo")
    (root / "out").symlink_to("/", target_is_directory=True)
    (root / "zero").symlink_to("/dev/zero")
    return root


ROOT = _tree()
PARTS = ["file.bin", "dir", "a.bin", "loop", "fifo", "out", "zero", "..", ".", "etc", "passwd",
         "n" * 300, "%2e%2e", "x y", "dev", "null"]
ABSOLUTE = ["/dev/zero", "/dev/null", "/etc/passwd", "/proc/self/status", str(ROOT / "fifo"),
            str(ROOT / "loop" / "x"), "/" + "n" * 300]


def spec(uri: str, digest: str | None, adapter: str | None) -> ModelSpec | None:
    model: dict[str, object] = {"uri": uri, "sha256": digest}
    if adapter is not None:
        model["adapters"] = [{"name": "a", "uri": adapter, "sha256": digest}]
    try:
        return ModelSpec.model_validate({"name": "m", "version": "v1.0.0", "model": model})
    except ValueError:
        return None  # the grammar refused it before verification


paths = st.one_of(st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map(
    lambda ps: str(ROOT.joinpath(*ps))), st.sampled_from(ABSOLUTE))


@settings(max_examples=examples(150))
@given(paths, st.sampled_from([None, "0" * 64]), st.none() | paths, st.booleans(), st.booleans())
@example(str(ROOT / "loop"), None, None, True, True)
@example("/" + "n" * 300, "0" * 64, None, False, True)
@example(str(ROOT / "fifo"), "0" * 64, None, False, True)
@example("/dev/zero", "0" * 64, None, False, True)
@example(str(ROOT / "zero"), "0" * 64, None, False, False)
def test_verify_refuses_or_accepts_promptly(path: str, digest: str | None, adapter: str | None,
                                            as_uri: bool, rooted: bool) -> None:
    uri = Path(path).as_uri() if as_uri and "%" not in path else path
    s = spec(uri, digest, adapter)
    if s is None:
        return
    trust = TrustSettings(allowed_roots=[ROOT] if rooted else [])

    async def run() -> None:
        try:
            await asyncio.wait_for(verify.verify_spec(s, trust), 10)
        except VerificationError as exc:
            assert exc.reason and "\n" not in exc.reason

    asyncio.run(run())
