"""Untrusted input the fetchers parse before any connection: URIs, manifests, file names."""

from __future__ import annotations

import hashlib
import json

import pytest

from watcher.core.errors import DocumentError, VerificationError
from watcher.fetchers.base import file_name, http_failure, safe_relpath
from watcher.fetchers.oci import OCI_MANIFEST, parse_manifest
from watcher.fetchers.oci_api import OciRef
from watcher.fetchers.oci_push import media_type
from watcher.fetchers.s3 import parse as parse_s3

HEX = "ab" * 32


@pytest.mark.parametrize(("uri", "expected"), [
    ("oci://127.0.0.1:5000/models/qwen:v1.2.0", ("127.0.0.1:5000", "models/qwen", "v1.2.0", None)),
    (f"oci://reg.example/a/b/c@sha256:{HEX}", ("reg.example", "a/b/c", None, HEX)),
    (f"oci://reg:443/m:v1@sha256:{HEX}", ("reg:443", "m", "v1", HEX)),
])
def test_oci_references(uri: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = OciRef.parse(uri)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("uri", [
    "oci://reg/models/qwen",  # neither tag nor digest
    "oci://reg/Models/qwen:v1",  # upper case repository
    "oci://reg/../etc:v1", "oci://user:pw@reg/m:v1", "oci://reg/m:v1 ", "oci://reg/m:-bad",
    f"oci://reg/m@sha256:{HEX[:-1]}", "oci:///m:v1", "https://reg/m:v1",
])
def test_bad_oci_references_are_document_errors(uri: str) -> None:
    with pytest.raises(DocumentError):
        OciRef.parse(uri)


@pytest.mark.parametrize("uri", ["s3://b/k", "s3://UPPER/k", "s3://bucket/", "s3://bu..cket/k",
                                 "s3://bucket//abs", "s3://bucket/a\nb"])
def test_bad_s3_uris_are_document_errors(uri: str) -> None:
    with pytest.raises(DocumentError):
        parse_s3(uri)


@pytest.mark.parametrize("name", ["../x", "a/../b", "/abs", "", "a//b", ".hidden", "a/./b", "x\0y"])
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(DocumentError):
        safe_relpath(name, "layer")


def test_file_names() -> None:
    assert safe_relpath("tokenizer/vocab.txt", "x") == "tokenizer/vocab.txt"
    assert file_name("https://h/a/model.safetensors?x=1") == "model.safetensors"
    assert file_name("https://h/") == "weights"


def _manifest(**over: object) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
                   "digest": f"sha256:{HEX}", "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": f"sha256:{HEX}",
                    "size": 10, "annotations": {"org.opencontainers.image.title": "model.bin"}}],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_manifest_layers_become_named_blobs() -> None:
    data = _manifest()
    art = parse_manifest(data, hashlib.sha256(data).hexdigest(), "oci://r/m:v1")
    assert [(b.digest, b.size, b.name) for b in art.blobs] == [(HEX, 10, "model.bin")]
    assert not art.directory and art.manifest == data


def _layer(title: str | None = None, **over: object) -> dict[str, object]:
    layer: dict[str, object] = {"digest": f"sha256:{HEX}", "size": 1, **over}
    if title is not None:
        layer["annotations"] = {"org.opencontainers.image.title": title}
    return layer


@pytest.mark.parametrize(("over", "error", "reason"), [
    ({"mediaType": "application/vnd.oci.image.index.v1+json"}, DocumentError, "image index"),
    ({"layers": []}, DocumentError, "no layers"),
    ({"layers": [_layer(digest="md5:x")]}, DocumentError, "not sha256"),
    ({"layers": [_layer(size=-1)]}, DocumentError, "byte count"),
    ({"layers": [_layer(urls=["http://elsewhere/x"])]}, VerificationError, "points elsewhere"),
    ({"layers": [_layer("../../etc/passwd")]}, DocumentError, "not a safe relative path"),
    ({"layers": [_layer("a"), _layer("a/b")]}, DocumentError, "used twice"),
])
def test_unfit_manifests_are_refused(over: dict[str, object], error: type[Exception], reason: str) -> None:
    data = _manifest(**over)
    with pytest.raises(error, match=reason):
        parse_manifest(data, hashlib.sha256(data).hexdigest(), "oci://r/m:v1")


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (408, True),
                                                   (401, False), (403, False), (404, False), (416, False)])
def test_which_statuses_are_retried(status: int, retryable: bool) -> None:
    assert http_failure(status, "x").retryable is retryable


def test_modelpack_media_types() -> None:
    assert media_type("model.safetensors") == "application/vnd.cncf.model.weight.v1.raw"
    assert media_type("config.json") == "application/vnd.cncf.model.weight.config.v1.raw"
    assert media_type("README.md") == "application/vnd.cncf.model.doc.v1.raw"
    assert media_type("LICENSE") == "application/vnd.cncf.model.doc.v1.raw"
    assert media_type("modeling.py") == "application/vnd.cncf.model.code.v1.raw"
