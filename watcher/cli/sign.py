"""`model-watcher sign FILE --key PRIVATE`: digest and signature lines for a document.

Prints two YAML lines to paste into the document's `model:` section:

    sha256: <64 hex>            # of FILE's bytes, or of the manifest of a directory
    signature: <base64>         # ed25519 over those 64 hex characters (ASCII)

The digest is computed exactly as the daemon's `verify` computes it (same module).
"""

from __future__ import annotations

import argparse
import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.core.errors import SettingsError
from watcher.core.verify import digest_path_sync

if TYPE_CHECKING:  # imported late: every command module is imported to build the parser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sign", help="print sha256 and ed25519 signature of weights for the document"
    )
    p.add_argument("file", type=Path, help="weights file, or a directory (manifest digest)")
    p.add_argument("--key", required=True, type=Path, help="private key from `keygen`")
    p.set_defaults(func=run)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """PKCS#8 PEM (what keygen writes), or the 32-byte seed raw or in base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"--key {path}: {exc.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"not an ed25519 key ({type(key).__name__})")
            return key
        seed = data if len(data) == 32 else base64.b64decode(data.strip(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SettingsError(f"--key {path}: not an ed25519 private key ({exc})") from None


def sign_digest(key: Ed25519PrivateKey, digest: str) -> str:
    """base64 of the ed25519 signature over the hex digest's ASCII bytes."""
    return base64.b64encode(key.sign(digest.encode("ascii"))).decode("ascii")


def run(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    if not args.file.exists():
        raise SettingsError(f"{args.file}: no such file or directory")
    digest = digest_path_sync(args.file)
    print(f"sha256: {digest}")
    print(f"signature: {sign_digest(key, digest)}")
    return 0
