"""`[weights]` settings: which schemes are staged, the cache, retries, credentials.

Validated here (not in watcher/settings.py) like every plug-in's options, so a typo names
its field (`weights.quota: ...`). Secrets are SecretStr and registered for log redaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, SecretStr

from watcher.observability.logs import register_secret
from watcher.plugins import parse_options

Scheme = Literal["oci", "http", "https", "s3"]
ALL_SCHEMES: tuple[Scheme, ...] = ("oci", "http", "https", "s3")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credential(_Strict):
    """Basic credentials for one registry or artifact server, matched by `host[:port]`."""

    host: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+$")
    username: str
    password: SecretStr


class S3Options(_Strict):
    endpoint: str | None = Field(None, description="S3-compatible endpoint URL; None = AWS")
    region: str = "us-east-1"
    access_key_id: str | None = Field(None, description="else AWS_ACCESS_KEY_ID")
    secret_access_key: SecretStr | None = Field(None, description="else AWS_SECRET_ACCESS_KEY")
    addressing_style: Literal["path", "virtual"] = "path"
    presign_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)


class WeightsOptions(_Strict):
    #: Fetch remote weights into the local cache before an apply; off = remote URIs go to
    #: the server as published (and a digest on them is refused, see docs/trust.md).
    stage: bool = True
    #: Stage the weights of a revision that waits for its admission (a fleet member whose
    #: rollout step has not come yet), so that its step is a cache hit (core/prefetch.py).
    prefetch: bool = True
    schemes: tuple[Scheme, ...] = ALL_SCHEMES
    cache_dir: Path | None = Field(None, description="default: STATE_DIR/blobs")
    quota: ByteSize = Field(ByteSize(0), description="cache size limit, e.g. '50GiB'; 0 = none")
    partial_quota: ByteSize = Field(ByteSize(0), description="resumable partials; 0 = quota")
    max_parallel: int = Field(2, ge=1, le=32, description="blob downloads at once")
    attempts: int = Field(5, ge=1, le=50, description="tries per blob before the revision fails")
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(10.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    push_chunk: ByteSize = Field(ByteSize(16 * 1024 * 1024), ge=64 * 1024)
    #: Registries spoken to over plain HTTP (like Docker's insecure-registries).
    insecure_registries: tuple[str, ...] = ()
    #: Hosts (`host` or `host:port`) weights may come from; empty = any.
    allowed_hosts: tuple[str, ...] = ()
    ca_file: Path | None = None
    credentials: tuple[Credential, ...] = ()
    s3: S3Options = Field(default_factory=S3Options)

    def credential(self, host: str) -> Credential | None:
        return next((c for c in self.credentials if c.host == host), None)


def parse_weights_options(raw: Mapping[str, Any]) -> WeightsOptions:
    """Validate `[weights]`; SettingsError naming `weights.<field>` when wrong."""
    options = parse_options(WeightsOptions, raw, "weights")
    for cred in options.credentials:
        register_secret(cred.password.get_secret_value())
    if options.s3.secret_access_key is not None:
        register_secret(options.s3.secret_access_key.get_secret_value())
    return options
