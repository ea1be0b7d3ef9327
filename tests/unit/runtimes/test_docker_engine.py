"""engine.py's pure parts: references, the pull stream fold, error mapping, auth header."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from pydantic import SecretStr

from watcher.runtimes.engine import (
    EngineError,
    NameConflict,
    NotFound,
    PullError,
    PullProgress,
    RegistryAuth,
    _demux,
    _error,
    _fold,
    split_reference,
)


@pytest.mark.parametrize(("ref", "expected"), [
    ("busybox", ("busybox", None, None)),
    ("127.0.0.1:5000/dify/model-server:v1.2.0", ("127.0.0.1:5000/dify/model-server", "v1.2.0", None)),
    ("127.0.0.1:5000/dify/model-server", ("127.0.0.1:5000/dify/model-server", None, None)),
    ("reg:5000/a/b@sha256:abc", ("reg:5000/a/b", None, "sha256:abc")),
    ("reg:5000/a/b:v1@sha256:abc", ("reg:5000/a/b", "v1", "sha256:abc")),
])
def test_split_reference(ref: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_reference(ref) == expected


def test_fold_tracks_layers_status_and_digest() -> None:
    p = PullProgress("img")
    _fold(p, {"status": "Downloading", "id": "l1", "progressDetail": {"current": 5, "total": 10}})
    _fold(p, {"status": "Downloading", "id": "l2", "progressDetail": {"current": 0, "total": 30}})
    assert (p.current, p.total) == (5, 40)
    _fold(p, {"status": "Download complete", "id": "l1", "progressDetail": {}})
    _fold(p, {"status": "Digest: sha256:feed"})
    assert p.current == 10
    assert p.digest == "sha256:feed"
    assert p.events == 4


@pytest.mark.parametrize("doc", [
    {"error": "boom", "errorDetail": {"message": "manifest unknown"}},
    {"errorDetail": {"message": "manifest unknown"}},
    {"error": "manifest unknown"},
])
def test_an_error_inside_the_stream_raises(doc: dict[str, object]) -> None:
    with pytest.raises(PullError, match="pull img: manifest unknown"):
        _fold(PullProgress("img"), doc)


def _resp(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(("path", "status", "message", "cls"), [
    ("/containers/create", 404, "no such container", NotFound),
    ("/containers/create", 409, "Conflict. The container name is already in use", NameConflict),
    ("/containers/create", 500, 'creating container storage: the container name "x" is already in use by abc',
     NameConflict),
    ("/containers/create", 500, "something else", EngineError),
    # a start's port clash (Docker's userland proxy, Podman's port reservation) is not a name
    ("/containers/abc/start", 500, "Error starting userland proxy: listen tcp4 127.0.0.1:21001: bind: "
     "address already in use", EngineError),
    ("/containers/abc/start", 500, "cannot listen on the TCP port: listen tcp4 127.0.0.1:21000: bind: "
     "address already in use", EngineError),
])
def test_error_mapping_absorbs_podman_and_docker(path: str, status: int, message: str, cls: type) -> None:
    err = _error("POST", path, _resp(status, {"message": message}))
    assert type(err) is cls
    assert err.status == status
    assert message in str(err)


def test_registry_auth_header_is_base64url_json_and_repr_hides_the_password() -> None:
    auth = RegistryAuth("mw", SecretStr("hunter2"), "127.0.0.1:5000")
    doc = json.loads(base64.urlsafe_b64decode(auth.header()))
    assert doc == {"username": "mw", "password": "hunter2", "serveraddress": "127.0.0.1:5000"}
    assert "hunter2" not in repr(auth)


def test_demux_multiplexed_and_plain_logs() -> None:
    framed = b"\x01\0\0\0\0\0\0\x03out" + b"\x02\0\0\0\0\0\0\x04err\n"
    assert _demux(framed) == "outerr\n"
    assert _demux(b"plain text") == "plain text"


def test_progress_bar_by_bytes_or_by_layers() -> None:
    from watcher.cli.pull import bar

    p = PullProgress("img")
    _fold(p, {"status": "Downloading", "id": "l1", "progressDetail": {"current": 5, "total": 10}})
    assert "50%" in bar(p) and "0.0/0.0 MB" in bar(p)
    q = PullProgress("img")  # podman: no byte counts, only layer states
    _fold(q, {"status": "Pulling fs layer", "id": "a", "progressDetail": {}})
    _fold(q, {"status": "Already exists", "id": "b", "progressDetail": {}})
    assert "1/2 layers" in bar(q) and "50%" in bar(q)
