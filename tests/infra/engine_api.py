"""What a test checks or arranges in a container engine, through its Engine API socket.

The same few calls work against Podman's compatible socket and Docker's, so a test written
against `EngineAPI` runs against both engines. It is deliberately independent of
`watcher.runtimes.engine` (the code under test): a plain synchronous httpx client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

API = "http://engine/v1.41"


class EngineAPI:
    """`kind` is "podman" or "docker"; `socket` is the Engine API's unix socket."""

    def __init__(self, kind: str, socket: Path) -> None:
        self.kind = kind
        self.socket = socket

    def __repr__(self) -> str:
        return f"EngineAPI({self.kind}, {self.socket})"

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url=API,
                          timeout=60) as c:
            return c.request(method, path, **kwargs)

    def ping(self) -> bool:
        return self._call("GET", "/_ping").text == "OK"

    def containers(self, label: str) -> list[str]:
        """Names of all containers (any state) carrying `label` (key or key=value), sorted."""
        resp = self._call("GET", "/containers/json",
                          params={"all": "true", "filters": json.dumps({"label": [label]})})
        resp.raise_for_status()
        return sorted(c["Names"][0].lstrip("/") for c in resp.json())

    def inspect(self, name: str) -> dict[str, Any]:
        resp = self._call("GET", f"/containers/{name}/json")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def create(self, name: str, image: str, labels: dict[str, str] | None = None) -> str:
        """Create (not start) a container, as an operator or another tool would."""
        resp = self._call("POST", "/containers/create", params={"name": name},
                          json={"Image": image, "Labels": labels or {}})
        resp.raise_for_status()
        cid: str = resp.json()["Id"]
        return cid

    def remove(self, *names: str) -> None:
        """Force-remove; a container that is already gone is fine."""
        for name in names:
            resp = self._call("DELETE", f"/containers/{name}", params={"force": "true", "v": "true"})
            if resp.status_code not in (204, 200, 404):
                resp.raise_for_status()

    def remove_all(self) -> None:
        resp = self._call("GET", "/containers/json", params={"all": "true"})
        if resp.status_code == 200:
            self.remove(*(c["Id"] for c in resp.json()))
