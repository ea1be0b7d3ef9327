"""Trust in what is swapped in: the weights' sha256 and an ed25519 signature over it.

What is hashed: digest.py (a file's bytes, or a directory's manifest; symlinks refused).

What is signed: the 64 lowercase hex characters of `model.sha256`, as ASCII bytes.
`model.signature` is the base64 of the 64-byte ed25519 signature over them.

`verify_spec` checks the cheap things first (presence, signature over the declared digest)
and only then reads the weights, so an untrusted document never costs a 1 GB read. Any
refusal raises VerificationError with a one-line reason; nothing here touches a server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from watcher.core.digest import CHUNK as CHUNK
from watcher.core.digest import _Cancelled as _Cancelled
from watcher.core.digest import digest_path
from watcher.core.digest import digest_path_sync as digest_path_sync
from watcher.core.digest import local_path as local_path
from watcher.core.digest import manifest_lines as manifest_lines
from watcher.core.errors import SettingsError, VerificationError
from watcher.core.spec import ModelSpec
from watcher.settings import TrustSettings

if TYPE_CHECKING:
    # cryptography (with its Rust core, ~10 MB of RSS) is imported only where a key or a
    # signature is handled: a daemon without trusted keys never loads it.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger("watcher.core.verify")

@dataclass(frozen=True)
class TrustedKey:
    key: Ed25519PublicKey
    key_id: str  # first 16 hex chars of sha256(raw public key)
    origin: str  # the settings entry it came from (a path, or "inline #N")


@dataclass(frozen=True)
class Verified:
    """What `verify_spec` established, for logs and the audit record."""

    digest: str | None = None
    digest_checked: bool = False
    key_id: str | None = None


# -- keys ---------------------------------------------------------------------------------


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_public_key(data: bytes, origin: str) -> Ed25519PublicKey:
    """A public key from PEM, 32 raw bytes, or base64 of the 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(stripped)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"not an ed25519 key ({type(key).__name__})")
            return key
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        raw = base64.b64decode(stripped, validate=True)
        if len(raw) != 32:
            raise ValueError(f"base64 decodes to {len(raw)} bytes, an ed25519 key has 32")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise SettingsError(
            f"trust.trusted_keys: {origin}: not an ed25519 public key ({exc})"
        ) from None


def _is_inline_key(entry: str) -> bool:
    try:
        return len(base64.b64decode(entry.strip(), validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def load_trusted_keys(entries: Iterable[str]) -> list[TrustedKey]:
    """Each entry is a path to a key file, or inline base64 of the 32 raw key bytes.

    SettingsError names the bad entry; the daemon can call this at start to fail early.
    """
    keys: list[TrustedKey] = []
    for i, entry in enumerate(entries):
        path = Path(entry).expanduser()
        if path.is_file():
            origin = str(path)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SettingsError(f"trust.trusted_keys: {path}: {exc.strerror}") from None
        elif _is_inline_key(entry):
            origin, data = f"inline #{i}", entry.encode("ascii")
        else:
            raise SettingsError(
                f"trust.trusted_keys: {entry}: no such file (nor inline base64 of a 32-byte key)"
            )
        key = parse_public_key(data, origin)
        keys.append(TrustedKey(key, key_id(raw_public_bytes(key)), origin))
    return keys


def check_signature(digest: str, signature_b64: str, keys: list[TrustedKey]) -> TrustedKey:
    """The trusted key whose signature over `digest` this is; VerificationError otherwise."""
    from cryptography.exceptions import InvalidSignature

    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("model.signature is not valid base64") from None
    if len(signature) != 64:
        raise VerificationError(
            f"model.signature is {len(signature)} bytes, an ed25519 signature has 64"
        )
    message = digest.encode("ascii")
    for trusted in keys:
        try:
            trusted.key.verify(signature, message)
        except InvalidSignature:
            continue
        return trusted
    raise VerificationError(
        f"model.signature over sha256 {digest[:12]}... is not by any of the "
        f"{len(keys)} trusted key(s) (wrong key, or digest/signature altered)"
    )


# -- digests ------------------------------------------------------------------------------


def _is_relative_path(uri: str) -> bool:
    return urlparse(uri).scheme == "" and not uri.startswith("/")


def _check_location(what: str, uri: str, roots: list[Path]) -> None:
    local = local_path(uri)
    if local is not None:
        _check_root(local, roots, what)
    elif roots and _is_relative_path(uri):
        raise VerificationError(
            f"{what} {uri!r} is a relative path, which trust.allowed_roots cannot "
            "vouch for; use file:// or an absolute path"
        )


def _check_root(path: Path, roots: list[Path], what: str) -> Path:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise VerificationError(f"{what} {str(path)[:200]} cannot be resolved: {exc}") from None
    if roots and not any(resolved.is_relative_to(r.resolve()) for r in roots):
        raise VerificationError(
            f"{what} {path} is outside trust.allowed_roots ({', '.join(map(str, roots))})"
        )
    return resolved


async def _check_digest(what: str, uri: str, expected: str, trust: TrustSettings) -> None:
    path = local_path(uri)
    if path is None:
        raise VerificationError(
            f"{what}.sha256 cannot be checked for {uri!r}: only file:// URIs and absolute paths "
            "can be hashed here, and remote weights only through a staged scheme (weights.schemes: "
            "oci, http, https, s3); set trust.verify_digest = false to leave it to the server"
        )
    resolved = _check_root(path, trust.allowed_roots, f"{what}.uri")
    try:
        if not resolved.exists():
            raise VerificationError(f"{what}.uri {uri}: no such file or directory")
        actual = await digest_path(resolved)
    except OSError as exc:
        raise VerificationError(f"{what}.uri {uri}: cannot read: {exc.strerror or exc}") from exc
    if actual != expected:
        raise VerificationError(
            f"{what}.sha256 mismatch for {uri}: document says {expected[:12]}..., "
            f"weights hash to {actual[:12]}..."
        )


# -- the check the reconciler runs --------------------------------------------------------


async def verify_spec(spec: ModelSpec, trust: TrustSettings, *,
                      staged: Callable[[str], bool] | None = None) -> Verified:
    """Refuse (VerificationError, one-line reason) weights that are not what was published.

    Order: required fields present -> signature over the declared digest by a trusted key
    -> allowed roots -> the weights' (and adapters') actual digests. URIs for which
    `staged(uri)` is true (oci://, http(s)://, s3:// with weights staging on) are not hashed
    here: the stager (watcher/fetchers) verifies their digest while downloading them.
    """
    model = spec.model
    digest, signature = model.sha256, model.signature
    if digest is None and (trust.require_digest or trust.require_signature):
        raise VerificationError("model.sha256 is missing and the trust settings require it")
    if trust.require_digest:
        missing = [a.name for a in model.adapters if a.sha256 is None]
        if missing:
            raise VerificationError(f"adapters without sha256: {', '.join(missing)}")
    if signature is None and trust.require_signature:
        raise VerificationError("model.signature is missing and trust.require_signature is on")

    signer: TrustedKey | None = None
    if signature is not None:
        if digest is None:
            raise VerificationError("model.signature is present but model.sha256 is not")
        try:
            keys = load_trusted_keys(trust.trusted_keys)
        except SettingsError as exc:
            raise VerificationError(exc.reason) from exc
        if keys:
            signer = check_signature(digest, signature, keys)
        elif trust.require_signature:
            raise VerificationError("signatures are required but trust.trusted_keys is empty")
        else:
            log.warning("%s: model.signature not checked: no trusted keys configured", spec.name)

    # Every local uri, with or without a digest, must resolve (symlinks resolved) under the
    # allowed roots: an adapter without sha256 is still loaded by the server.
    for what, uri in [("model.uri", model.uri), *((f"adapter {a.name} uri", a.uri) for a in model.adapters)]:
        _check_location(what, uri, trust.allowed_roots)

    remote = staged or (lambda _uri: False)
    checked = False
    if trust.verify_digest:
        if digest is not None and not remote(model.uri):
            await _check_digest("model", model.uri, digest, trust)
            checked = True
        for adapter in model.adapters:
            if adapter.sha256 is not None and not remote(adapter.uri):
                await _check_digest(f"adapter {adapter.name}", adapter.uri, adapter.sha256, trust)
    return Verified(digest, checked, signer.key_id if signer else None)
