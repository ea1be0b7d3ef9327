"""`oci://REGISTRY/REPO:TAG` or `@sha256:...`: weights as an OCI artifact in a registry.

The document's `model.sha256` is the manifest digest (what `push-weights` prints): the
manifest is fetched (OCI Accept header; docker-registry 2.8 answers 404 without it),
hashed and compared before it is parsed, and every layer it lists is then checked against
its own digest while it streams, so the signature over `model.sha256` covers every byte.
Layers are files named by `org.opencontainers.image.title` (the ORAS and ModelPack
convention); one layer is served as that file, several as a directory. Image indexes,
layers that point elsewhere (`urls`) and unsafe file names are refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from watcher.core.errors import DocumentError, VerificationError
from watcher.fetchers.base import Artifact, Blob, FetchFailed, Location, check_host, http_failure, safe_relpath
from watcher.fetchers.oci_api import OciRef, RegistryClient
from watcher.fetchers.options import Credential, WeightsOptions

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = ("application/vnd.oci.image.index.v1+json",
           "application/vnd.docker.distribution.manifest.list.v2+json")
ACCEPT = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
MAX_MANIFEST = 4 * 1024 * 1024


def _descriptor(d: Any, where: str) -> tuple[str, int, dict[str, Any]]:
    if not isinstance(d, dict):
        raise DocumentError(f"{where}: not a descriptor")
    digest, size = d.get("digest"), d.get("size")
    if not (isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71
            and all(c in "0123456789abcdef" for c in digest[7:])):
        raise DocumentError(f"{where}: digest {digest!r} is not sha256:<64 lowercase hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DocumentError(f"{where}: size {size!r} is not a byte count")
    if d.get("urls"):
        raise VerificationError(f"{where} points elsewhere (urls: {d['urls']}); only blobs of "
                                "the registry itself are fetched")
    annotations = d.get("annotations") or {}
    return digest[7:], size, annotations if isinstance(annotations, dict) else {}


def parse_manifest(data: bytes, digest: str, uri: str) -> Artifact:
    """The artifact a verified manifest describes; DocumentError/VerificationError if unfit."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise DocumentError(f"{uri}: the manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise DocumentError(f"{uri}: the manifest is not a JSON object")
    media = doc.get("mediaType")
    if media in INDEXES:
        raise DocumentError(f"{uri} is an image index (several manifests); point model.uri at "
                            "one artifact's manifest")
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST) or doc.get("schemaVersion") != 2:
        raise DocumentError(f"{uri}: unsupported manifest (mediaType {media!r})")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise DocumentError(f"{uri}: the manifest lists no layers")
    _descriptor(doc.get("config"), f"{uri} config")
    blobs: list[Blob] = []
    for i, layer in enumerate(layers):
        hexd, size, notes = _descriptor(layer, f"{uri} layer {i}")
        name = notes.get(TITLE) or notes.get(FILEPATH) or hexd
        blobs.append(Blob(hexd, size, safe_relpath(str(name), f"{uri} layer {i}")))
    names = [b.name for b in blobs]
    clash = next((n for n in names if names.count(n) > 1 or any(o.startswith(n + "/") for o in names)), None)
    if clash:
        raise DocumentError(f"{uri}: file name {clash!r} is used twice (or as a file and a directory)")
    return Artifact(digest, tuple(blobs), directory=len(blobs) > 1, manifest=data)


class OciFetcher:
    def __init__(self, options: WeightsOptions, fallback: Credential | None = None) -> None:
        self.options = options
        self.fallback = fallback
        verify: str | bool = str(options.ca_file) if options.ca_file else True
        self._http = httpx.AsyncClient(
            verify=verify, follow_redirects=True,
            timeout=httpx.Timeout(options.read_timeout, connect=options.connect_timeout))
        self._clients: dict[str, RegistryClient] = {}

    @classmethod
    def create(cls, options: WeightsOptions, fallback: Credential | None = None) -> OciFetcher:
        return cls(options, fallback)

    def client(self, host: str) -> RegistryClient:
        if host not in self._clients:
            cred = self.options.credential(host)
            if cred is None and self.fallback is not None and self.fallback.host == host:
                cred = self.fallback
            self._clients[host] = RegistryClient(
                host, self._http, insecure=host in self.options.insecure_registries, credential=cred)
        return self._clients[host]

    def ref(self, uri: str) -> OciRef:
        ref = OciRef.parse(uri)
        check_host(ref.registry, self.options.allowed_hosts, uri)
        return ref

    async def resolve(self, uri: str, digest: str) -> Artifact:
        ref = self.ref(uri)
        if ref.digest is not None and ref.digest != digest:
            raise VerificationError(f"model.uri pins sha256:{ref.digest[:12]}..., model.sha256 is "
                                    f"{digest[:12]}...: they must name the same manifest")
        client = self.client(ref.registry)
        resp = await client.request("GET", f"/v2/{ref.repository}/manifests/{ref.reference}",
                                    ref.repository, headers={"Accept": ACCEPT})
        if resp.status_code != 200:
            raise http_failure(resp.status_code, f"manifest {ref}")
        data = resp.content
        if len(data) > MAX_MANIFEST:
            raise FetchFailed(f"manifest {ref} is {len(data)} bytes, over {MAX_MANIFEST}",
                              retryable=False)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise VerificationError(
                f"manifest {ref} is sha256:{actual[:12]}..., the document pins {digest[:12]}... "
                "(the tag moved, or the registry serves another artifact)")
        return parse_manifest(data, digest, uri)

    async def locate(self, uri: str, blob: Blob, *, refresh: bool = False) -> Location:
        ref = self.ref(uri)
        client = self.client(ref.registry)
        headers = await client.authorization(ref.repository, "pull", refresh)
        return Location(f"{client.base}/v2/{ref.repository}/blobs/sha256:{blob.digest}", headers)

    async def aclose(self) -> None:
        await self._http.aclose()
