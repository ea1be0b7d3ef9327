"""Publish weights as an OCI artifact (CNCF ModelPack layout) to a registry: `push-weights`.

Each file becomes one uncompressed layer (`application/vnd.cncf.model.<kind>.v1.raw`, its
digest = the file's sha256, so the daemon's cache can serve it as is) annotated with
`org.opencontainers.image.title` (ORAS skips untitled layers) and `org.cncf.model.filepath`;
a ModelPack config lists the layer digests (`modelfs.diffIds`); the manifest carries
`artifactType: application/vnd.cncf.model.manifest.v1+json`. No timestamps: the same files
and tag give the same manifest digest.

Uploads follow the sequence verified against docker-registry 2.8: a blob the registry
already has (HEAD 200) is skipped; otherwise POST an upload, PATCH chunks (each answer's
`Location` is the next one to use), PUT `?digest=`. A failed chunk is retried (tenacity)
after asking the upload's status (GET Location -> `Range: 0-N`), so it resumes where the
registry stands; an upload the registry forgot starts that blob again. The manifest's digest
(Docker-Content-Digest, checked against the bytes sent) is what the document pins.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from watcher.core.errors import WatcherError
from watcher.fetchers.base import FetchFailed, http_failure, safe_relpath
from watcher.fetchers.oci import OCI_MANIFEST
from watcher.fetchers.oci_api import OciRef, RegistryClient
from watcher.fetchers.options import Credential, WeightsOptions

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
_DOCS = (".md", ".txt", ".rst", ".pdf")
_CONFIGS = (".json", ".yaml", ".yml", ".toml", ".model", ".tiktoken")
_CODE = (".py", ".sh", ".ipynb")

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class Layer:
    path: Path
    name: str
    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": f"sha256:{self.digest}", "size": self.size,
                "annotations": {"org.opencontainers.image.title": self.name,
                                "org.cncf.model.filepath": self.name}}


@dataclass(frozen=True)
class Pushed:
    ref: OciRef
    digest: str  # manifest sha256 hex: the document's model.sha256
    layers: tuple[Layer, ...]
    uploaded: int  # blobs sent (the others were there already)


def media_type(name: str) -> str:
    lower = name.lower()
    kind = ("doc" if lower.endswith(_DOCS) or lower.rsplit("/", 1)[-1].startswith(("readme", "license"))
            else "weight.config" if lower.endswith(_CONFIGS)
            else "code" if lower.endswith(_CODE) else "weight")
    return f"application/vnd.cncf.model.{kind}.v1.raw"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def collect(root: Path) -> list[Layer]:
    """One layer per regular file: FILE itself, or every file under DIR (no symlinks out)."""
    if root.is_file():
        files = [(root.name, root)]
    elif root.is_dir():
        real = root.resolve()
        files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                       if p.is_file() and p.resolve().is_relative_to(real))
    else:
        raise WatcherError(f"{root}: no such file or directory")
    if not files:
        raise WatcherError(f"{root}: no files to push")
    return [Layer(p, safe_relpath(rel, str(root)), _sha256(p), p.stat().st_size, media_type(rel))
            for rel, p in files]


def manifest_for(ref: OciRef, layers: list[Layer]) -> tuple[bytes, bytes]:
    """(config bytes, manifest bytes): ModelPack, deterministic."""
    config = json.dumps({
        "descriptor": {"name": ref.repository.rsplit("/", 1)[-1], "version": ref.tag or ""},
        "config": {},
        "modelfs": {"type": "layers", "diffIds": [f"sha256:{x.digest}" for x in layers]},
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{hashlib.sha256(config).hexdigest()}",
                   "size": len(config)},
        "layers": [x.descriptor() for x in layers],
    }, separators=(",", ":")).encode()
    return config, manifest


class Pusher:
    def __init__(self, ref: OciRef, options: WeightsOptions, credential: Credential | None,
                 progress: Progress | None = None) -> None:
        self.ref = ref
        self.options = options
        self.chunk = int(options.push_chunk)
        self.progress = progress or (lambda done, total: None)
        verify: str | bool = str(options.ca_file) if options.ca_file else True
        self.http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(
            options.read_timeout, connect=options.connect_timeout))
        self.client = RegistryClient(ref.registry, self.http, credential=credential,
                                     insecure=ref.registry in options.insecure_registries)
        self._done = 0
        self._total = 0

    async def push(self, root: Path) -> Pushed:
        layers = await asyncio.to_thread(collect, root)
        config, manifest = manifest_for(self.ref, layers)
        self._total = sum(x.size for x in layers) + len(config)
        uploaded = 0
        try:
            for layer in layers:
                uploaded += await self._blob(layer.digest, layer.size, layer.path)
            uploaded += await self._blob(hashlib.sha256(config).hexdigest(), len(config), config)
            digest = await self._manifest(manifest)
        finally:
            await self.http.aclose()
        return Pushed(self.ref, digest, tuple(layers), uploaded)

    async def _blob(self, digest: str, size: int, source: Path | bytes) -> int:
        repo = self.ref.repository
        head = await self.client.request("HEAD", f"/v2/{repo}/blobs/sha256:{digest}", repo,
                                         actions="pull,push")
        if head.status_code == 200:
            self._advance(size)
            return 0
        async for trying in AsyncRetrying(stop=stop_after_attempt(self.options.attempts), reraise=True,
                                          wait=wait_exponential(self.options.backoff_initial,
                                                                max=self.options.backoff_max),
                                          retry=retry_if_exception(lambda e: isinstance(e, FetchFailed)
                                                                   and e.retryable)):
            with trying:
                await self._upload(digest, size, source)
        return 1

    async def _upload(self, digest: str, size: int, source: Path | bytes) -> None:
        repo = self.ref.repository
        resp = await self.client.request("POST", f"/v2/{repo}/blobs/uploads/", repo, actions="pull,push")
        if resp.status_code != 202:
            raise http_failure(resp.status_code, f"starting the upload of sha256:{digest[:12]}")
        location = str(resp.url.join(resp.headers["Location"]))
        offset, start_done = 0, self._done
        while offset < size:
            data = _read(source, offset, self.chunk)
            try:
                resp = await self.client.request(
                    "PATCH", location, repo, actions="pull,push", content=data,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + len(data) - 1}"})
            except FetchFailed:
                location, offset = await self._resync(location, digest)
                self._done = start_done + offset
                continue
            if resp.status_code != 202:
                raise http_failure(resp.status_code, f"uploading sha256:{digest[:12]} at byte {offset}")
            location = str(resp.url.join(resp.headers["Location"]))
            offset += len(data)
            self._advance(len(data))
        url = httpx.URL(location).copy_add_param("digest", f"sha256:{digest}")
        resp = await self.client.request("PUT", str(url), repo, actions="pull,push")
        if resp.status_code != 201:
            raise http_failure(resp.status_code, f"finishing the upload of sha256:{digest[:12]}")

    async def _resync(self, location: str, digest: str) -> tuple[str, int]:
        """Where the registry stands with an upload after a failed chunk; retryable if lost."""
        resp = await self.client.request("GET", location, self.ref.repository, actions="pull,push")
        if resp.status_code != 204:
            raise FetchFailed(f"upload of sha256:{digest[:12]} was lost (HTTP {resp.status_code}); "
                              "starting it again", retryable=True)
        last = resp.headers.get("Range", "0-0").rpartition("-")[2]
        return str(resp.url.join(resp.headers.get("Location", location))), int(last) + 1 if last.isdigit() else 0

    async def _manifest(self, manifest: bytes) -> str:
        repo = self.ref.repository
        resp = await self.client.request("PUT", f"/v2/{repo}/manifests/{self.ref.reference}", repo,
                                         actions="pull,push", content=manifest,
                                         headers={"Content-Type": OCI_MANIFEST})
        if resp.status_code != 201:
            raise http_failure(resp.status_code, f"pushing the manifest ({resp.text[:200]})")
        digest = hashlib.sha256(manifest).hexdigest()
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != f"sha256:{digest}":
            raise FetchFailed(f"the registry stored the manifest as {said}, not sha256:{digest}",
                              retryable=False)
        return digest

    def _advance(self, n: int) -> None:
        self._done += n
        self.progress(self._done, self._total)


def _read(source: Path | bytes, offset: int, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[offset:offset + n]
    with source.open("rb") as f:
        f.seek(offset)
        return f.read(n)

