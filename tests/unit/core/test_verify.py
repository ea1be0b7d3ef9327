"""Weights digests and ed25519 signatures: what is accepted, and the reason for each refusal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from watcher.cli import main as cli_main
from watcher.cli.keygen import write_key_pair
from watcher.cli.sign import load_private_key, sign_digest
from watcher.core import verify
from watcher.core.errors import SettingsError, VerificationError
from watcher.core.spec import ModelSpec
from watcher.settings import TrustSettings


def make_spec(uri: str, sha256: str | None = None, signature: str | None = None,
              adapters: list[dict[str, Any]] | None = None) -> ModelSpec:
    model: dict[str, Any] = {"uri": uri, "sha256": sha256, "signature": signature}
    if adapters:
        model["adapters"] = adapters
    return ModelSpec.model_validate({"name": "m", "version": "v1.0.0", "model": model})


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    p = tmp_path / "weights.bin"
    p.write_bytes(os.urandom(3 * verify.CHUNK + 123))  # spans several chunks
    return p


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_key_pair(tmp_path / "keys")


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def signed_spec(weights: Path, private: Path) -> ModelSpec:
    digest = sha(weights)
    return make_spec(weights.as_uri(), digest, sign_digest(load_private_key(private), digest))


# -- digests ------------------------------------------------------------------------------


async def test_file_digest_matches_hashlib(weights: Path) -> None:
    assert await verify.digest_path(weights) == sha(weights)


async def test_directory_digest_is_sha256_of_sorted_sha256sum_manifest(tmp_path: Path) -> None:
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "b.bin").write_bytes(b"bbb")
    (d / "a.json").write_text("{}")
    (d / "sub" / "c.bin").write_bytes(b"c" * 10)
    manifest = "".join(
        f"{hashlib.sha256((d / rel).read_bytes()).hexdigest()}  {rel}\n"
        for rel in ("a.json", "b.bin", "sub/c.bin")
    )
    assert await verify.digest_path(d) == hashlib.sha256(manifest.encode()).hexdigest()
    # the same text `sha256sum` prints, so a publisher can reproduce it with coreutils
    out = subprocess.run(["sha256sum", "a.json", "b.bin", "sub/c.bin"], cwd=d,
                         capture_output=True, text=True, check=True).stdout
    assert out == manifest


async def test_manifest_refuses_every_symlink(tmp_path: Path, weights: Path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    (d / "link.bin").symlink_to(weights)
    with pytest.raises(VerificationError, match=r"link\.bin is a symlink"):
        await verify.digest_path(d)
    (d / "link.bin").unlink()
    (d / "real.bin").write_bytes(b"x")
    (d / "inner.bin").symlink_to(d / "real.bin")  # even one that stays inside
    with pytest.raises(VerificationError, match=r"inner\.bin is a symlink"):
        await verify.digest_path(d)


async def test_a_symlinked_subdirectory_cannot_change_behind_the_digest(tmp_path: Path) -> None:
    """Before: os.walk skipped the linked directory, so its files were not in the manifest
    and could be swapped without changing the digest, while the server followed the link."""
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "part-0.bin").write_bytes(b"original")
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_bytes(b"{}")
    (d / "shards").symlink_to(shards, target_is_directory=True)
    with pytest.raises(VerificationError, match="shards is a symlink"):
        await verify.digest_path(d)


async def test_special_files_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    os.mkfifo(d / "pipe")  # opening it would block the hashing thread forever
    with pytest.raises(VerificationError, match="not a regular file"):
        await verify.digest_path(d)


async def test_matching_digest_passes(weights: Path) -> None:
    result = await verify.verify_spec(make_spec(weights.as_uri(), sha(weights)), TrustSettings())
    assert result.digest_checked and result.digest == sha(weights)


async def test_digest_mismatch_rejected(weights: Path) -> None:
    with pytest.raises(VerificationError, match="sha256 mismatch"):
        await verify.verify_spec(make_spec(weights.as_uri(), "0" * 64), TrustSettings())


async def test_tampered_file_rejected(weights: Path) -> None:
    spec = make_spec(weights.as_uri(), sha(weights))
    with weights.open("r+b") as f:
        f.seek(verify.CHUNK + 7)
        byte = f.read(1)
        f.seek(verify.CHUNK + 7)
        f.write(bytes([byte[0] ^ 0xFF]))  # always a change (a fixed byte matches 1 time in 256)
    with pytest.raises(VerificationError, match="sha256 mismatch"):
        await verify.verify_spec(spec, TrustSettings())


async def test_missing_weights_rejected(tmp_path: Path) -> None:
    spec = make_spec((tmp_path / "nope.bin").as_uri(), "a" * 64)
    with pytest.raises(VerificationError, match="no such file"):
        await verify.verify_spec(spec, TrustSettings())


async def test_missing_digest_when_required(weights: Path) -> None:
    await verify.verify_spec(make_spec(weights.as_uri()), TrustSettings())  # not required: fine
    with pytest.raises(VerificationError, match=r"sha256 is missing"):
        await verify.verify_spec(make_spec(weights.as_uri()), TrustSettings(require_digest=True))


async def test_remote_uri_with_digest_fails_closed() -> None:
    spec = make_spec("s3://bucket/model.bin", "a" * 64)
    with pytest.raises(VerificationError, match="only file:// URIs"):
        await verify.verify_spec(spec, TrustSettings())
    await verify.verify_spec(spec, TrustSettings(verify_digest=False))


async def test_verify_digest_off_skips_reading(tmp_path: Path) -> None:
    spec = make_spec((tmp_path / "absent").as_uri(), "a" * 64)
    result = await verify.verify_spec(spec, TrustSettings(verify_digest=False))
    assert not result.digest_checked


async def test_allowed_roots(tmp_path: Path, weights: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    spec = make_spec(weights.as_uri(), sha(weights))
    with pytest.raises(VerificationError, match=r"outside trust\.allowed_roots"):
        await verify.verify_spec(spec, TrustSettings(allowed_roots=[other]))
    await verify.verify_spec(spec, TrustSettings(allowed_roots=[tmp_path]))
    relative = make_spec("models/x.joblib")
    with pytest.raises(VerificationError, match="relative path"):
        await verify.verify_spec(relative, TrustSettings(allowed_roots=[tmp_path]))
    with pytest.raises(VerificationError, match="absolute paths can be hashed"):
        await verify.verify_spec(make_spec("models/x.joblib", "a" * 64), TrustSettings())
    link = tmp_path / "elsewhere" / "link.bin"
    link.symlink_to(weights)  # a link inside the allowed root, to weights outside it
    with pytest.raises(VerificationError, match="outside"):
        await verify.verify_spec(make_spec(link.as_uri(), sha(weights)),
                                 TrustSettings(allowed_roots=[other]))


async def test_adapter_digests(tmp_path: Path, weights: Path) -> None:
    good = {"name": "a1", "uri": weights.as_uri(), "sha256": sha(weights)}
    bad = {"name": "a2", "uri": weights.as_uri(), "sha256": "1" * 64}
    await verify.verify_spec(make_spec("s3://x/y", adapters=[good]), TrustSettings())
    with pytest.raises(VerificationError, match=r"adapter a2\.sha256 mismatch"):
        await verify.verify_spec(make_spec("s3://x/y", adapters=[good, bad]), TrustSettings())
    unpinned = {"name": "a3", "uri": weights.as_uri()}
    with pytest.raises(VerificationError, match="adapters without sha256: a3"):
        await verify.verify_spec(make_spec(weights.as_uri(), sha(weights), adapters=[unpinned]),
                                 TrustSettings(require_digest=True))


async def test_weights_that_never_end_or_never_resolve_are_refused_promptly(tmp_path: Path) -> None:
    """Before: a FIFO blocked the hashing thread forever, /dev/zero was hashed forever, a
    symlink loop raised RuntimeError and a 300-byte name OSError (a dead worker)."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for uri, reason in [((tmp_path / "fifo").as_uri(), "not a regular file"),
                        ("file:///dev/zero", "not a regular file"),
                        ((tmp_path / "loop").as_uri(), "cannot be resolved"),
                        ("/" + "n" * 300, "cannot")]:
        with pytest.raises(VerificationError, match=reason):
            await asyncio.wait_for(verify.verify_spec(make_spec(uri, "0" * 64), TrustSettings()), 10)


async def test_adapters_resolve_under_allowed_roots_with_or_without_sha256(tmp_path: Path,
                                                                          weights: Path) -> None:
    """Before: only adapters with a sha256 were looked at, so an unpinned adapter could load
    from anywhere."""
    root = tmp_path / "root"
    root.mkdir()
    inside = root / "adapter.bin"
    inside.write_bytes(b"lora")
    trust = TrustSettings(allowed_roots=[root])
    await verify.verify_spec(make_spec(inside.as_uri(), adapters=[{"name": "ok", "uri": inside.as_uri()}]),
                             trust)
    for uri in (weights.as_uri(), str(weights)):
        with pytest.raises(VerificationError, match=r"adapter evil uri .* is outside trust\.allowed_roots"):
            await verify.verify_spec(make_spec(inside.as_uri(), adapters=[{"name": "evil", "uri": uri}]),
                                     trust)
    escape = root / "escape"
    escape.symlink_to(weights.parent, target_is_directory=True)  # resolved, then judged
    with pytest.raises(VerificationError, match="outside"):
        await verify.verify_spec(make_spec(inside.as_uri(), adapters=[
            {"name": "evil", "uri": (escape / weights.name).as_uri()}]), trust)
    with pytest.raises(VerificationError, match="relative path"):
        await verify.verify_spec(make_spec(inside.as_uri(), adapters=[{"name": "r", "uri": "lora/x"}]),
                                 trust)


async def test_cancel_stops_the_hashing_thread(tmp_path: Path) -> None:
    big = tmp_path / "sparse"
    with big.open("wb") as f:
        f.truncate(64 * 1024**3)  # minutes of hashing if nothing stopped it
    task = asyncio.create_task(verify.digest_path(big))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # what the cancellation does to the worker thread: it sets the stop flag, and the
    # thread leaves at the next chunk
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(verify.digest_path_sync, big, stop)
        time.sleep(0.05)
        stop.set()
        with pytest.raises(verify._Cancelled):
            future.result(timeout=5)


# -- signatures ---------------------------------------------------------------------------


async def test_good_signature_by_trusted_key(weights: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    trust = TrustSettings(require_signature=True, trusted_keys=[str(public)])
    result = await verify.verify_spec(signed_spec(weights, private), trust)
    assert result.key_id == verify.load_trusted_keys([str(public)])[0].key_id


async def test_inline_and_pem_trusted_keys(weights: Path, keys: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    private, public = keys
    inline = public.read_text().strip()
    pem = tmp_path / "k.pem"
    pem.write_bytes(load_private_key(private).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for entry in (inline, str(pem)):
        trust = TrustSettings(require_signature=True, trusted_keys=[entry])
        await verify.verify_spec(signed_spec(weights, private), trust)


async def test_untrusted_key_rejected(
    weights: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    _, public = keys
    stranger, _ = write_key_pair(tmp_path / "stranger")
    trust = TrustSettings(require_signature=True, trusted_keys=[str(public)])
    with pytest.raises(VerificationError, match="not by any of the 1 trusted key"):
        await verify.verify_spec(signed_spec(weights, stranger), trust)


async def test_signature_rejected_before_weights_are_read(keys: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    # the weights do not even exist: the untrusted signature is the reason given
    _, public = keys
    other = Ed25519PrivateKey.generate()
    digest = "ab" * 32
    spec = make_spec((tmp_path / "absent").as_uri(), digest, sign_digest(other, digest))
    trust = TrustSettings(require_signature=True, trusted_keys=[str(public)])
    with pytest.raises(VerificationError, match="not by any"):
        await verify.verify_spec(spec, trust)


async def test_signature_over_other_digest_rejected(weights: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    spec = signed_spec(weights, private)
    forged = make_spec(spec.model.uri, "0" * 64, spec.model.signature)
    trust = TrustSettings(trusted_keys=[str(public)])
    with pytest.raises(VerificationError, match="not by any"):
        await verify.verify_spec(forged, trust)


async def test_missing_signature_when_required(weights: Path, keys: tuple[Path, Path]) -> None:
    _, public = keys
    trust = TrustSettings(require_signature=True, trusted_keys=[str(public)])
    with pytest.raises(VerificationError, match="signature is missing"):
        await verify.verify_spec(make_spec(weights.as_uri(), sha(weights)), trust)
    with pytest.raises(VerificationError, match="sha256 is missing"):
        await verify.verify_spec(make_spec(weights.as_uri()), trust)


@pytest.mark.parametrize(("signature", "reason"), [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"short").decode(), "5 bytes"),
])
async def test_malformed_signature(weights: Path, keys: tuple[Path, Path], signature: str,
                                   reason: str) -> None:
    trust = TrustSettings(trusted_keys=[str(keys[1])])
    with pytest.raises(VerificationError, match=reason):
        await verify.verify_spec(make_spec(weights.as_uri(), sha(weights), signature), trust)


async def test_required_signature_without_keys(weights: Path, keys: tuple[Path, Path]) -> None:
    spec = signed_spec(weights, keys[0])
    with pytest.raises(VerificationError, match="trusted_keys is empty"):
        await verify.verify_spec(spec, TrustSettings(require_signature=True))
    await verify.verify_spec(spec, TrustSettings())  # not required, no keys: digest only


async def test_bad_trusted_key_entry_is_a_verification_reason(
    weights: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = signed_spec(weights, keys[0])
    with pytest.raises(VerificationError, match="no such file"):
        await verify.verify_spec(spec, TrustSettings(trusted_keys=["/nonexistent/k.pub"]))
    bad = tmp_path / "bad.pub"
    bad.write_text(base64.b64encode(bytes(31)).decode())
    with pytest.raises(SettingsError, match="31 bytes, an ed25519 key has 32"):
        verify.load_trusted_keys([str(bad)])
    with pytest.raises(SettingsError, match="nor inline base64"):
        verify.load_trusted_keys(["bm90IGEga2V5"])


# -- the CLI helpers ----------------------------------------------------------------------


def test_keygen_and_sign_cli(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["keygen", "--out", str(tmp_path / "k")]) == 0
    private = tmp_path / "k" / "model-watcher.key"
    assert private.stat().st_mode & 0o777 == 0o600
    assert cli_main(["keygen", "--out", str(tmp_path / "k")]) == 2  # no silent overwrite
    capsys.readouterr()
    assert cli_main(["sign", str(weights), "--key", str(private)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sha256: {sha(weights)}"
    signature = lines[1].removeprefix("signature: ")
    public = str(tmp_path / "k" / "model-watcher.pub")
    key = verify.load_trusted_keys([public])[0]
    assert verify.check_signature(sha(weights), signature, [key]) is key

