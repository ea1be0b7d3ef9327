"""Trust in what is swapped in: the weights' sha256 and an ed25519 signature over it.

What is hashed (see docs/trust.md):
- a file: its bytes;
- a directory: its *manifest*, the text `sha256sum` prints for every regular file under
  it, one `<hex>  <relative/posix/path>\\n` line each, sorted by path; the digest is the
  sha256 of that text. Hashing streams 1 MiB chunks in a worker thread, so a multi-GB
  file costs no memory and does not block the event loop.

What is signed: the 64 lowercase hex characters of `model.sha256`, as ASCII bytes.
`model.signature` is the base64 of the 64-byte ed25519 signature over them.

`verify_spec` checks the cheap things first (presence, signature over the declared digest)
and only then reads the weights, so an untrusted document never costs a 1 GB read. Any
refusal raises VerificationError with a one-line reason; nothing here touches a server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from watcher.core.errors import SettingsError, VerificationError
from watcher.core.spec import ModelSpec
from watcher.settings import TrustSettings

if TYPE_CHECKING:
    # cryptography (with its Rust core, ~10 MB of RSS) is imported only where a key or a
    # signature is handled: a daemon without trusted keys never loads it.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger("watcher.core.verify")

CHUNK = 1024 * 1024


class _Cancelled(Exception):
    """The awaiting task was cancelled; the worker thread stops at the next chunk."""


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


def local_path(uri: str) -> Path | None:
    """The local path of a file:// URI or an absolute path; None for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def _is_relative_path(uri: str) -> bool:
    return urlparse(uri).scheme == "" and not uri.startswith("/")


def _hash_file(path: Path, stop: threading.Event, buf: bytearray) -> str:
    h = hashlib.sha256()
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while True:
            if stop.is_set():
                raise _Cancelled
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def manifest_lines(root: Path, stop: threading.Event | None = None) -> list[str]:
    """`<sha256>  <relative posix path>` for every regular file under `root`, path-sorted.

    Symlinked files are hashed by their content, but must stay inside `root`.
    """
    stop = stop or threading.Event()
    buf = bytearray(CHUNK)
    real_root = root.resolve()
    files: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_file():
                continue
            if p.is_symlink() and not p.resolve().is_relative_to(real_root):
                raise VerificationError(f"{p} is a symlink leading out of {root}")
            files.append((p.relative_to(root).as_posix(), p))
    files.sort()
    return [f"{_hash_file(p, stop, buf)}  {rel}\n" for rel, p in files]


def digest_path_sync(path: Path, stop: threading.Event | None = None) -> str:
    """sha256 of a file's bytes, or of a directory's manifest text."""
    stop = stop or threading.Event()
    if path.is_dir():
        text = "".join(manifest_lines(path, stop))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    return _hash_file(path, stop, bytearray(CHUNK))


async def digest_path(path: Path) -> str:
    """`digest_path_sync` in a worker thread; cancelling stops the thread at the next chunk."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(digest_path_sync, path, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


def _check_root(path: Path, roots: list[Path], what: str) -> Path:
    resolved = path.resolve()
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
    if not resolved.exists():
        raise VerificationError(f"{what}.uri {uri}: no such file or directory")
    try:
        actual = await digest_path(resolved)
    except OSError as exc:
        raise VerificationError(f"{what}.uri {uri}: cannot read: {exc.strerror}") from exc
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

    local = local_path(model.uri)
    if local is not None:
        _check_root(local, trust.allowed_roots, "model.uri")
    elif trust.allowed_roots and _is_relative_path(model.uri):
        raise VerificationError(
            f"model.uri {model.uri!r} is a relative path, which trust.allowed_roots cannot "
            "vouch for; use file:// or an absolute path"
        )

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
