"""The stager against real servers: resume after cuts and outages, shared blobs, bad input,
disk full, quota eviction. No daemon here (test_daemon_weights.py drives the daemon)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.artifacts import CutProxy, StaticNginx
from tests.infra.registry import Registry
from tests.infra.s3proxy import S3Proxy
from tests.integration.weights.conftest import push_weights, weights_settings
from watcher.core.errors import FetchError, VerificationError
from watcher.core.spec import ModelSpec
from watcher.core.state import State
from watcher.fetchers.options import parse_weights_options
from watcher.fetchers.stage import Stager

pytestmark = pytest.mark.asyncio(loop_scope="session")
MB = 1_000_000


def blob(tmp: Path, name: str, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def spec(uri: str, digest: str, name: str = "m", version: str = "v1.0.0") -> ModelSpec:
    return ModelSpec.model_validate({"name": name, "version": version,
                                     "model": {"uri": uri, "sha256": digest}})


def stager(state_dir: Path, **weights: Any) -> Stager:
    return Stager(parse_weights_options(weights_settings(**weights)), state_dir)


def leftovers(st: Stager) -> list[str]:
    """Files in the cache proper and the partial area (nothing may stay after a failure)."""
    return sorted(p.name for d in (st.cache.blobs, st.cache.partials) if d.exists() for p in d.iterdir())


@pytest.fixture
def served(nginx: StaticNginx, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """A 12 MB file on nginx: (url, sha256, size)."""
    path, digest = blob(nginx.www, f"{tmp_path.name}.bin", 12 * MB)
    yield f"{nginx.url}/{path.name}", digest, 12 * MB
    path.unlink()


async def test_a_cut_connection_resumes_where_it_stopped(tmp_path: Path, nginx: StaticNginx,
                                                          served: tuple[str, str, int]) -> None:
    url, digest, size = served
    proxy = CutProxy(nginx.port, cut_after=size // 3)
    try:
        st = stager(tmp_path / "state")
        staged = await st.stage(spec(url.replace(nginx.url, proxy.url), digest))
        await st.aclose()
    finally:
        proxy.close()
    local = Path(staged.model.uri.removeprefix("file://"))
    assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
    assert local.name == url.rsplit("/", 1)[1]
    # three cuts, four connections, and (headers aside) every byte came over the wire once
    assert proxy.connections == 4
    assert size <= proxy.relayed < size + 8192
    path = "/" + url.rsplit("/", 1)[1]
    ranges = [line for line in nginx.requests() if path in line]
    assert ranges[0].startswith(f"GET {path} 200") and all("bytes=" in r for r in ranges[1:])
    assert leftovers(st) == [digest]


async def test_the_server_going_away_mid_download_resumes_when_it_is_back(
        tmp_path: Path, served: tuple[str, str, int], nginx: StaticNginx) -> None:
    url, digest, size = served
    # a second nginx on the same files, stopped while a throttled download runs
    other = StaticNginx(tmp_path / "nginx")
    shutil.rmtree(other.www)
    other.www.symlink_to(nginx.www)
    other.start()
    proxy = CutProxy(other.port, rate=6 * MB)
    st = stager(tmp_path / "state", attempts=8, backoff_initial=0.3, backoff_max=1.0)
    import asyncio

    task = asyncio.create_task(st.stage(spec(f"{proxy.url}/{url.rsplit('/', 1)[1]}", digest)))
    try:
        while proxy.relayed < size // 4:
            await asyncio.sleep(0.05)
        other.stop()  # the artifact server goes away mid-download ...
        await asyncio.sleep(1.0)
        relayed_at_stop = proxy.relayed
        proxy.rate = None
        other.start()  # ... and comes back on the same port
        staged = await asyncio.wait_for(task, 60)
    finally:
        other.stop()
        proxy.close()
        await st.aclose()
    assert Path(staged.model.uri.removeprefix("file://")).stat().st_size == size
    assert relayed_at_stop < size and proxy.relayed < size + 16384, "resumed, not restarted"


async def test_a_shared_blob_is_downloaded_once(tmp_path: Path, nginx: StaticNginx,
                                                served: tuple[str, str, int]) -> None:
    import asyncio

    url, digest, _ = served
    st = stager(tmp_path / "state")
    a, b = await asyncio.gather(st.stage(spec(url, digest, "model-a")),
                                st.stage(spec(url, digest, "model-b", "v2.0.0")))
    again = await st.stage(spec(url, digest, "model-c"))
    await st.aclose()
    assert a.model.uri == b.model.uri == again.model.uri
    path = "/" + url.rsplit("/", 1)[1]
    assert len([line for line in nginx.requests() if path in line]) == 1


async def test_oci_artifact_directory_is_served_as_a_directory(tmp_path: Path, registry: Registry) -> None:
    src = tmp_path / "model"
    (src / "tokenizer").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(3 * MB))
    (src / "config.json").write_text('{"layers": 2}')
    (src / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    pushed = push_weights(tmp_path, registry, src, "models/dir-model:v1")
    again = push_weights(tmp_path, registry, src, "models/dir-model:v1")
    assert again["sha256"] == pushed["sha256"], "the same files give the same manifest"
    assert "0 blob(s) uploaded" in again["stderr"]
    st = stager(tmp_path / "state", registry=registry)
    staged = await st.stage(spec(f"oci://{registry.address}/models/dir-model:v1", pushed["sha256"]))
    await st.aclose()
    view = Path(staged.model.uri.removeprefix("file://"))
    assert sorted(p.relative_to(view).as_posix() for p in view.rglob("*") if p.is_file()) == [
        "config.json", "model.safetensors", "tokenizer/vocab.txt"]
    assert (view / "config.json").read_text() == '{"layers": 2}'
    manifest = json.loads(st.cache.blob(pushed["sha256"]).read_bytes())
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert {x["annotations"]["org.opencontainers.image.title"] for x in manifest["layers"]} == {
        "config.json", "model.safetensors", "tokenizer/vocab.txt"}


def _registry_blob(registry: Registry, digest: str) -> Path:
    return (registry.root / "data/docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data")


async def test_bad_oci_input_is_refused_with_a_reason_and_leaves_nothing(
        tmp_path: Path, registry: Registry) -> None:
    weights, wdigest = blob(tmp_path, "w.bin", 2 * MB)
    pushed = push_weights(tmp_path, registry, weights, "models/bad:v1")
    uri, good = f"oci://{registry.address}/models/bad:v1", pushed["sha256"]
    cases: list[tuple[str, dict[str, Any], str, type[Exception], str]] = [
        ("tag moved / wrong digest", {"registry": registry}, uri, VerificationError, "the tag moved"),
        ("401", {"insecure_registries": [registry.address],
                 "credentials": [{"host": registry.address, "username": "mw", "password": "wrong"}]},
         uri, FetchError, "HTTP 401"),
        ("404", {"registry": registry}, uri.replace(":v1", ":nope"), FetchError, "HTTP 404"),
    ]
    for what, settings, u, error, reason in cases:
        st = stager(tmp_path / what.replace(" ", "-").replace("/", ""), **settings)
        digest = hashlib.sha256(b"other").hexdigest() if what.startswith("tag") else good
        with pytest.raises(error, match=reason):
            await st.stage(spec(u, digest))
        await st.aclose()
        assert leftovers(st) == [], what
    # a tampered blob in the registry's storage: the stream does not hash to the manifest's digest
    stored = _registry_blob(registry, wdigest)
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        st = stager(tmp_path / "tampered", registry=registry)
        with pytest.raises(VerificationError, match="hashed to"):
            await st.stage(spec(uri, good))
        await st.aclose()
        assert leftovers(st) == [good], "only the (verified) manifest, no weights"
    finally:
        stored.write_bytes(original)


async def test_a_manifest_pointing_elsewhere_is_refused(tmp_path: Path, registry: Registry) -> None:
    import httpx

    weights, wdigest = blob(tmp_path, "w.bin", 1000)
    pushed = push_weights(tmp_path, registry, weights, "models/elsewhere:v1")
    auth = (registry.username, registry.password)
    base = f"http://{registry.address}/v2/models/elsewhere/manifests"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    manifest = httpx.get(f"{base}/v1", auth=auth, headers=accept).json()
    manifest["layers"][0]["urls"] = ["http://127.0.0.1:9/elsewhere.bin"]
    body = json.dumps(manifest).encode()
    put = httpx.put(f"{base}/foreign", auth=auth, content=body,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert put.status_code == 201, put.text
    st = stager(tmp_path / "state", registry=registry)
    with pytest.raises(VerificationError, match="points elsewhere"):
        await st.stage(spec(f"oci://{registry.address}/models/elsewhere:foreign",
                            hashlib.sha256(body).hexdigest()))
    await st.aclose()
    assert pushed["sha256"] != hashlib.sha256(body).hexdigest()
    assert not any(p.name == wdigest for p in st.cache.blobs.iterdir())


async def test_bad_http_and_s3_input(tmp_path: Path, nginx: StaticNginx, s3: S3Proxy,
                                     served: tuple[str, str, int]) -> None:
    url, digest, _ = served
    data, sdigest = os.urandom(MB), ""
    sdigest = hashlib.sha256(data).hexdigest()
    s3.put("weights", f"{tmp_path.name}/w.bin", data)
    s3uri = f"s3://weights/{tmp_path.name}/w.bin"
    cases: list[tuple[str, dict[str, Any], str, str, type[Exception], str]] = [
        ("wrong digest", {}, url, hashlib.sha256(b"x").hexdigest(), VerificationError, "hashed to"),
        ("404", {}, url + ".missing", digest, FetchError, "HTTP 404"),
        ("s3 wrong secret", {"s3": {**s3.weights_settings(), "secret_access_key": "nope-nope"}},
         s3uri, sdigest, FetchError, "HTTP 403"),
        ("s3 missing key", {"s3": s3.weights_settings()}, s3uri + ".missing", sdigest, FetchError,
         "HTTP 404"),
    ]
    for what, settings, uri, d, error, reason in cases:
        st = Stager(parse_weights_options({**weights_settings(), **settings}), tmp_path / what.replace(" ", "-"))
        with pytest.raises(error, match=reason):
            await st.stage(spec(uri, d))
        await st.aclose()
        assert leftovers(st) == [], what
    # an object tampered with on the S3 server's disk
    s3.object_path("weights", f"{tmp_path.name}/w.bin").write_bytes(data[::-1])
    st = stager(tmp_path / "s3-tampered", s3=s3)
    with pytest.raises(VerificationError, match="hashed to"):
        await st.stage(spec(s3uri, sdigest))
    await st.aclose()
    assert leftovers(st) == []


async def test_a_full_disk_fails_cleanly(tmp_path: Path, served: tuple[str, str, int]) -> None:
    url, digest, _ = served
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        st = Stager(parse_weights_options({**weights_settings(), "cache_dir": str(mnt / "blobs")}),
                    tmp_path / "state")
        with pytest.raises(FetchError, match="disk full"):
            await st.stage(spec(url, digest))
        await st.aclose()
        assert leftovers(st) == []
        assert st.board.get("m") is not None and st.board.get("m").state == "failed"  # type: ignore[union-attr]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


async def test_eviction_keeps_the_applied_and_previous_stable_weights(tmp_path: Path,
                                                                      nginx: StaticNginx) -> None:
    files = [blob(nginx.www, f"{tmp_path.name}-{i}.bin", 3 * MB) for i in range(4)]
    uris = [(f"{nginx.url}/{p.name}", d) for p, d in files]
    state_dir = tmp_path / "state"
    state = State(state_dir / "state.db")
    # history: rev0 stable (previous), rev1 applied; rev2 staged once, unused
    for i in (0, 1):
        s = spec(*uris[i], version=f"v1.{i}.0")
        row = state.record_seen("m", f"rev{i}", source="test", version=s.version, spec=s.canonical())
        state.commit(row, "m", f"rev{i}", s.version, s.canonical())
    state.close()
    st = stager(state_dir, quota=10 * MB)
    for i in (0, 1, 2):  # one model staging in turn (a staged revision stays pinned until the next)
        await st.stage(spec(*uris[i], name="x"))
        time.sleep(0.01)  # distinct mtimes for the LRU order
    await st.stage(spec(*uris[3], name="x"))  # needs room: evicts only the unprotected rev2
    assert {p.name for p in st.cache.blobs.iterdir()} == {uris[0][1], uris[1][1], uris[3][1]}
    assert not (st.cache.views / uris[2][1]).exists(), "a view of an evicted blob is removed too"
    big, bdigest = blob(nginx.www, f"{tmp_path.name}-big.bin", 6 * MB)
    with pytest.raises(FetchError, match="quota"):
        await st.stage(spec(f"{nginx.url}/{big.name}", bdigest, name="x"))
    await st.aclose()
    assert uris[0][1] in {p.name for p in st.cache.blobs.iterdir()}
    assert [p.name for p in st.cache.partials.iterdir()] == []
    for p, _ in files:
        p.unlink()
    big.unlink()
