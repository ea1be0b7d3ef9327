"""`model-watcher keygen --out DIR`: an ed25519 key pair for signing model weights.

Writes `DIR/NAME.key` (PKCS#8 PEM, mode 0600: keep it off the daemon's machines) and
`DIR/NAME.pub` (one line, base64 of the 32 raw public key bytes: give its path, or the line
itself, to the daemon's `trust.trusted_keys`). Refuses to overwrite unless `--force`.
"""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path
from typing import Any

from watcher.core.errors import SettingsError
from watcher.core.verify import key_id, raw_public_bytes


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "keygen", help="create an ed25519 key pair for signing weights"
    )
    p.add_argument("--out", required=True, type=Path, help="directory for NAME.key and NAME.pub")
    p.add_argument("--name", default="model-watcher", help="file name stem (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)


def write_key_pair(
    out: Path, name: str = "model-watcher", force: bool = False
) -> tuple[Path, Path]:
    """Create the pair; SettingsError when a file exists and `force` is off."""
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    if not force:
        for p in (private_path, public_path):
            if p.exists():
                raise SettingsError(f"{p} exists; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    from cryptography.hazmat.primitives import serialization  # not for `run`: see cli/__init__
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)  # also when --force reused an existing, looser file
    raw = base64.b64encode(raw_public_bytes(key.public_key())).decode("ascii")
    public_path.write_text(raw + "\n", encoding="ascii")
    return private_path, public_path


def run(args: argparse.Namespace) -> int:
    private_path, public_path = write_key_pair(args.out, args.name, args.force)
    raw = public_path.read_text(encoding="ascii").strip()
    kid = key_id(base64.b64decode(raw))
    print(f"private key: {private_path} (keep it secret; used by `model-watcher sign`)")
    print(f"public key:  {public_path} (key id {kid})")
    print(f'settings:    [trust] trusted_keys = ["{public_path}"]  # or the inline "{raw}"')
    return 0
