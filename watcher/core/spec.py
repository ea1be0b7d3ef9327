"""The model document (`ModelSpec`) and its parsing from raw config-center bytes.

Sections say how a change may be applied: `runtime` needs a restart of the model server,
`model` can be hot-swapped where the server supports it, `metadata` is recorded and never
acted on. Unknown fields are rejected everywhere so that a typo cannot pass silently.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import total_ordering
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from watcher.core.errors import DocumentError

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
DEFAULT_MAX_BYTES = 256 * 1024


@total_ordering
class Version:
    """A semantic version as the documents use it: `v1.2.0`, `v1.2.1-hotfix`, `v1.3.0-dev`.

    The channel is `release` without a pre-release part, else the pre-release's first
    identifier (`hotfix`, `dev`, `rc` ...). Ordering follows semver 2.0 precedence.
    """

    __slots__ = ("build", "major", "minor", "patch", "pre", "text")

    def __init__(self, text: str) -> None:
        m = SEMVER.match(text)
        if m is None:
            raise ValueError(
                f"version {text!r} is not semver (expected e.g. v1.2.0, v1.2.1-hotfix, v1.3.0-dev)"
            )
        self.text = text
        self.major, self.minor, self.patch = (int(m[k]) for k in ("major", "minor", "patch"))
        self.pre: tuple[str, ...] = tuple(m["pre"].split(".")) if m["pre"] else ()
        self.build = m["build"] or ""

    @property
    def channel(self) -> str:
        if not self.pre:
            return "release"
        head = re.split(r"[^A-Za-z]", self.pre[0])[0].lower()
        return head or "pre"

    def _key(self) -> tuple[Any, ...]:
        # A version without pre-release ranks above any of its pre-releases (semver 11.3).
        pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, not self.pre, pre_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def __str__(self) -> str:
        return self.text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeSection(_Strict):
    """Restart-class settings: any change here needs a new model server process/container."""

    image: str | None = Field(None, description="Container image, e.g. 127.0.0.1:5000/dify/model-server:v1.2.0")
    env: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)
    ports: dict[str, int] = Field(default_factory=dict, description="container port name -> port")
    labels: dict[str, str] = Field(default_factory=dict)


class Adapter(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    uri: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ModelSection(_Strict):
    """Hot-class settings: swapped into the running server through its API where it can."""

    uri: str = Field(description="Where the weights live: file:///..., s3://..., a registry ref")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights file or manifest"
    )
    signature: str | None = Field(None, description="base64 ed25519 signature over the sha256 digest")
    implementation: str | None = Field(None, description="server runtime class, e.g. mlserver_sklearn.SKLearnModel")
    parameters: dict[str, Any] = Field(default_factory=dict)
    adapters: list[Adapter] = Field(default_factory=list)


class Metadata(_Strict):
    """Recorded in history and shown by `history`; never acted on."""

    model_id: str | None = None
    training_data_version: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class HealthOverride(_Strict):
    """Per-model overrides of the daemon's health gate settings."""

    path: str | None = Field(None, description="path appended to the instance's base URL")
    url: str | None = None
    expected_status: int | None = Field(None, ge=100, le=599)
    latency_ms: float | None = Field(None, gt=0)
    initial_delay: float | None = Field(None, ge=0)
    period: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    success_threshold: int | None = Field(None, ge=1)
    failure_threshold: int | None = Field(None, ge=1)


class ModelSpec(_Strict):
    """One model's published configuration."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    model: ModelSection
    metadata: Metadata = Field(default_factory=Metadata)
    health: HealthOverride | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _unquoted_number(cls, v: Any) -> Any:
        # YAML reads `version: 1.2` as a float; say "not semver", not "not a string".
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        Version(v)
        return v

    @property
    def semver(self) -> Version:
        return Version(self.version)

    def canonical(self) -> dict[str, Any]:
        """JSON-able dict, used for diffs and for storage."""
        return self.model_dump(mode="json")


Format = Literal["yaml", "json"]


def parse_document(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, key: str | None = None) -> ModelSpec:
    """Parse and validate a document; DocumentError with a one-line reason on any problem.

    `key` is the document's name in the config center; when given, the spec's `name` must
    match it, so that one document cannot overwrite another model.
    """
    if len(raw) > max_bytes:
        raise DocumentError(f"document is {len(raw)} bytes, over the limit of {max_bytes}")
    if not raw.strip():
        raise DocumentError("document is empty")
    if b"\x00" in raw:
        raise DocumentError("document contains binary data (NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"document is not UTF-8 text (byte {exc.start})") from None
    data = _load(text)
    if not isinstance(data, dict):
        raise DocumentError(f"document must be a mapping, got {_kind(data)}")
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        from watcher.plugins import format_validation_error

        raise DocumentError(f"schema: {format_validation_error(exc)}") from None
    if key is not None and spec.name != key:
        raise DocumentError(f"name {spec.name!r} does not match the document key {key!r}")
    return spec


def _load(text: str) -> Any:
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(f"invalid YAML{where}: {problem}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, list):
        return "a list"
    return f"a scalar ({type(value).__name__})"


def json_schema() -> dict[str, Any]:
    return ModelSpec.model_json_schema()
