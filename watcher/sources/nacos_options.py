"""Options of the Nacos source, and the mapping between Nacos data ids and model keys.

A model's key is its data id without the extension (`qwen-chat.yaml` -> `qwen-chat`); its
revision is the md5 hex of the content's UTF-8 bytes, the same md5 Nacos computes and
compares for CAS. Pure: no SDK import, so settings validate without the `nacos` extra.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from watcher.sources.base import SessionOptions

_ADDRESS = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>[^:/\s\[\]]+):(?P<port>\d{1,5})$")


def content_md5(content: str | bytes) -> str:
    """The md5 hex Nacos records for `content` (its UTF-8 bytes)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def key_of(data_id: str) -> str:
    """`qwen-chat.yaml` -> `qwen-chat`; a data id without an extension is its own key."""
    stem, dot, _ = data_id.rpartition(".")
    return stem if dot and stem else data_id


class NacosTls(BaseModel):
    """gRPC TLS as nacos-sdk-python does it: it opens a CA, a client certificate and its key
    (all three, so all three are required); the open API calls use the same files."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str = ""

    @model_validator(mode="after")
    def _all_three(self) -> NacosTls:
        if self.enabled and not (self.ca_file and self.cert_file and self.key_file):
            raise ValueError("ca_file, cert_file and key_file are all needed "
                             "(nacos-sdk-python's gRPC TLS opens all three)")
        return self


class NacosOptions(SessionOptions):

    server_addresses: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:8848"], min_length=1,
        description="host:port of each server (the HTTP port; gRPC is that + grpc_port_offset)")
    namespace: str = Field("", description="namespace id; empty = the public namespace")
    group: str = Field("MODEL_SERVING", min_length=1)
    data_ids: list[str] | None = Field(None, description="watch exactly these data ids")
    data_id_pattern: str | None = Field(
        None, description="glob over the group's data ids (e.g. '*.yaml'), re-listed periodically; "
                          "needs a user allowed to list configs. Default when data_ids is unset: '*'")
    extension: str = Field(".yaml", description="appended to a model name to form a new data id")
    context_path: str = "/nacos"
    username: str | None = None
    password: SecretStr | None = None
    tls: NacosTls | None = None
    grpc_port_offset: int = Field(1000, ge=1, le=65535)
    timeout: float = Field(5.0, gt=0, description="per request, seconds")
    discovery_interval: float = Field(10.0, gt=0, description="re-list data ids (pattern mode)")
    check_interval: float = Field(1.0, gt=0, description="how often the connection is checked")

    @field_validator("server_addresses", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("server_addresses")
    @classmethod
    def _with_port(cls, value: list[str]) -> list[str]:
        for address in value:
            m = _ADDRESS.match(address)
            if m is None or not 0 < int(m["port"]) < 65536:
                raise ValueError(f"server address {address!r} must be host:port (port required; "
                                 "no IPv6 literals: the SDK splits on ':')")
        return value

    @field_validator("data_ids")
    @classmethod
    def _unique_keys(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            keys = [key_of(d) for d in value]
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            if dupes:
                raise ValueError(f"data ids map to the same model more than once: {dupes}")
            if any(not d.strip() for d in value):
                raise ValueError("data ids must not be empty")
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> NacosOptions:
        if self.data_ids is not None and self.data_id_pattern is not None:
            raise ValueError("give data_ids or data_id_pattern, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together")
        return self

    @property
    def pattern(self) -> str | None:
        """The glob in pattern mode; None when a fixed list of data ids is watched."""
        if self.data_ids is not None:
            return None
        return self.data_id_pattern or "*"

    def matches(self, data_id: str) -> bool:
        pattern = self.pattern
        return data_id in (self.data_ids or ()) if pattern is None \
            else fnmatch.fnmatchcase(data_id, pattern)

    def data_id_for(self, key: str) -> str:
        """The data id a model is published under: the listed one, else key + extension."""
        for data_id in self.data_ids or ():
            if key_of(data_id) == key:
                return data_id
        return key + self.extension

    def base_urls(self) -> list[str]:
        """HTTP base URLs (with the context path) of every server, for the open API."""
        out = []
        for address in self.server_addresses:
            m = _ADDRESS.match(address)
            assert m is not None
            scheme = m["scheme"] or ("https" if self.tls and self.tls.enabled else "http")
            path = "/" + self.context_path.strip("/") if self.context_path.strip("/") else ""
            out.append(f"{scheme}://{m['host']}:{m['port']}{path}")
        return out

    def grpc_endpoints(self) -> list[tuple[str, int]]:
        out = []
        for address in self.server_addresses:
            m = _ADDRESS.match(address)
            assert m is not None
            out.append((m["host"], int(m["port"]) + self.grpc_port_offset))
        return out
