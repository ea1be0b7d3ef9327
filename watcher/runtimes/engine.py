"""A small async client for the Docker Engine API over a unix socket (Docker or Podman).

Only what the docker runtime needs: pull (parsing the NDJSON progress stream, because a
pull answers 200 and reports failure only inside the stream), image inspect, and the
container life cycle (create / start / inspect / stop / remove / list by label).

Errors are this module's own (`EngineError` and subclasses, carrying the HTTP status);
the runtime translates them into the daemon's hierarchy at its boundary. Both engines'
ways of saying "name in use" at create (Docker 409, Podman 500 with a message) become
`NameConflict`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

log = logging.getLogger("watcher.runtimes.engine")

API_VERSION = "v1.41"
#: Stream statuses that mean a layer is in place.
DONE = frozenset({"Download complete", "Pull complete", "Already exists"})


class EngineError(Exception):
    """The engine refused or failed a request; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class EngineUnavailable(EngineError):
    """The socket cannot be reached (engine not running, wrong path, permissions)."""


class NotFound(EngineError):
    pass


class NameConflict(EngineError):
    pass


class PullError(EngineError):
    """The pull stream reported an error (bad credentials, unknown tag, registry down)."""


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials sent as X-Registry-Auth; the password never appears in repr or logs."""

    username: str
    password: SecretStr
    serveraddress: str = ""

    def header(self) -> str:
        doc = {"username": self.username, "password": self.password.get_secret_value()}
        if self.serveraddress:
            doc["serveraddress"] = self.serveraddress
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@dataclass
class PullProgress:
    """Running totals of a pull, fed by the NDJSON stream; `digest` when the engine says it."""

    image: str
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    status: str = ""
    digest: str | None = None
    events: int = 0
    seen: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)

    @property
    def current(self) -> int:
        return sum(c for c, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())


ProgressCallback = Callable[[PullProgress], None]


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """`registry/repo:tag@sha256:x` -> (repository, tag, digest); a port is not a tag."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, _, tag = name.rpartition(":")
    return name, tag, digest or None


class EngineClient:
    """One connection pool to the engine's socket; `aclose()` releases it."""

    def __init__(
        self, socket: Path, *, api_version: str = API_VERSION, timeout: float = 30.0
    ) -> None:
        self.socket = socket
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket)),
            base_url=f"http://engine/{api_version}",
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise EngineUnavailable(
                f"container engine at {self.socket} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code >= 400:
            raise _error(method, path, resp)
        return resp

    async def ping(self) -> str:
        return (await self._request("GET", "/_ping")).text

    # images -------------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None = None,
        timeout: float = 300.0,  # noqa: ASYNC109 - a stream's idle timeout, not a deadline
        on_progress: ProgressCallback | None = None,
    ) -> PullProgress:
        """Pull `ref` (tag or digest); PullError when the stream reports a failure."""
        repo, tag, digest = split_reference(ref)
        params = {"fromImage": repo, "tag": digest or tag or "latest"}
        headers = {"X-Registry-Auth": auth.header()} if auth else {}
        progress = PullProgress(image=ref)
        try:
            async with self._http.stream(
                "POST", "/images/create", params=params, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _error("POST", "/images/create", resp, PullError)
                async for doc in _ndjson(resp.aiter_lines()):
                    _fold(progress, doc)
                    if on_progress is not None:
                        on_progress(progress)
        except httpx.TimeoutException as exc:
            raise PullError(f"pull {ref}: no progress within {timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise EngineUnavailable(
                f"pull {ref}: container engine at {self.socket} unreachable: {exc}"
            ) from exc
        return progress

    async def image_inspect(self, ref: str) -> dict[str, Any]:
        data: dict[str, Any] = (await self._request("GET", f"/images/{ref}/json")).json()
        return data

    # containers ---------------------------------------------------------------------

    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        resp = await self._request("POST", "/containers/create", params={"name": name}, json=config)
        cid: str = resp.json()["Id"]
        return cid

    async def start(self, cid: str) -> None:
        await self._request("POST", f"/containers/{cid}/start")

    async def inspect(self, cid: str) -> dict[str, Any]:
        data: dict[str, Any] = (await self._request("GET", f"/containers/{cid}/json")).json()
        return data

    async def stop(self, cid: str, timeout: int = 10) -> None:  # noqa: ASYNC109 - engine's grace
        """Stop (SIGTERM, then SIGKILL after `timeout`); an already stopped one is fine."""
        try:
            await self._request(
                "POST", f"/containers/{cid}/stop", params={"t": timeout}, timeout=timeout + 30
            )
        except EngineError as exc:
            if exc.status != 304:
                raise

    async def remove(self, cid: str, *, force: bool = True) -> None:
        """Remove; a container that is already gone is fine (idempotent)."""
        with contextlib.suppress(NotFound):
            await self._request("DELETE", f"/containers/{cid}", params={"force": force, "v": True})

    async def logs(self, cid: str, tail: int = 20) -> str:
        resp = await self._request(
            "GET", f"/containers/{cid}/logs", params={"stdout": 1, "stderr": 1, "tail": tail}
        )
        return _demux(resp.content)

    async def list(self, labels: Mapping[str, str], *, all: bool = True) -> list[dict[str, Any]]:
        """Containers carrying every `labels` key=value (running and stopped when `all`)."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        resp = await self._request(
            "GET", "/containers/json", params={"all": all, "filters": json.dumps(filters)}
        )
        data: list[dict[str, Any]] = resp.json()
        return data


async def _ndjson(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            log.debug("pull: ignoring a line that is not JSON: %.200s", line)
            continue
        if isinstance(doc, dict):
            yield doc


def _fold(progress: PullProgress, doc: Mapping[str, Any]) -> None:
    """Fold one stream document into `progress`; raise PullError on an error document."""
    progress.events += 1
    if doc.get("error") or doc.get("errorDetail"):
        detail = doc.get("errorDetail") or {}
        message = detail.get("message") if isinstance(detail, dict) else None
        raise PullError(f"pull {progress.image}: {message or doc.get('error')}")
    status = str(doc.get("status") or "")
    if status:
        progress.status = status
    if status.startswith("Digest: "):
        progress.digest = status.removeprefix("Digest: ").strip()
    layer, detail = doc.get("id"), doc.get("progressDetail")
    if layer:
        progress.seen.add(str(layer))
        if status in DONE:
            progress.done.add(str(layer))
    if layer and isinstance(detail, dict) and detail.get("total"):
        progress.layers[str(layer)] = (int(detail.get("current") or 0), int(detail["total"]))
    elif layer and status in DONE:
        _, total = progress.layers.get(str(layer), (0, 0))
        progress.layers[str(layer)] = (total, total)


def _error(
    method: str, path: str, resp: httpx.Response, default: type[EngineError] = EngineError
) -> EngineError:
    try:
        message = str(resp.json().get("message") or resp.text)
    except (json.JSONDecodeError, AttributeError):
        message = resp.text
    text = f"{method} {path}: {resp.status_code} {message.strip()}"
    lowered = message.lower()
    cls: type[EngineError] = default
    if resp.status_code == 404:
        cls = NotFound
    elif path == "/containers/create" and (resp.status_code == 409 or (
        resp.status_code == 500 and ("already in use" in lowered or "name is in use" in lowered)
    )):
        # Only a create can clash on the name; a start's 500 "address already in use" is a
        # host port taken by another process (both engines), not a name.
        cls = NameConflict
    return cls(text, resp.status_code)


def _demux(raw: bytes) -> str:
    """Docker's multiplexed log stream (8-byte frame headers) to text; plain text passes."""
    out, i = bytearray(), 0
    while i + 8 <= len(raw) and raw[i] in (0, 1, 2) and raw[i + 1 : i + 4] == b"\0\0\0":
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    if i == 0:
        return raw.decode(errors="replace")
    return out.decode(errors="replace")
