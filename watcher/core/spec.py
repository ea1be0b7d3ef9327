"""The model document (`ModelSpec`) and its parsing from raw config-center bytes.

Sections say how a change may be applied: `runtime` needs a restart of the model server,
`model` can be hot-swapped where the server supports it, `metadata` is recorded and never
acted on. Unknown fields are rejected everywhere so that a typo cannot pass silently, and
every field is checked for the grammar of where it goes (grammar.py); the text is decoded
under the bounds of loader.py. What settings allow (env names, uri schemes, health caps) is
admission.py, called by policy.check.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import total_ordering
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from watcher.core import grammar
from watcher.core.errors import DocumentError
from watcher.core.loader import load_text

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
DEFAULT_MAX_BYTES = 256 * 1024
#: a channel is the whole pre-release: a word, optional digits, optional numeric identifiers
CHANNEL = re.compile(r"(?P<word>[A-Za-z]+)[0-9]*(?:\.[0-9]+)*")
#: what `model.parameters` (sent to servers as JSON) may hold
MAX_PARAMETER_DEPTH = 8
MAX_PARAMETER_VALUES = 2_000
MAX_MAP_ENTRIES = 256  # env, labels, ports, metrics, adapters


@total_ordering
class Version:
    """A semantic version as the documents use it: `v1.2.0`, `v1.2.1-hotfix`, `v1.3.0-dev`.

    The channel is `release` without a pre-release part; else the pre-release's word when
    the WHOLE pre-release is that word with optional digits and numeric identifiers
    (`hotfix`, `hotfix2`, `hotfix.2`, `rc1`, `dev.20261128`); anything else (`hotfix-dev`,
    `dev.hotfix`, `1`, and `release` itself) is the unnamed `pre` channel. Ordering follows
    semver 2.0 precedence.
    """

    __slots__ = ("build", "major", "minor", "patch", "pre", "text")

    def __init__(self, text: str) -> None:
        m = SEMVER.match(text) if len(text) <= 128 else None
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
        m = CHANNEL.fullmatch(".".join(self.pre))
        word = m["word"].lower() if m else "pre"
        return "pre" if word == "release" else word

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
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _label(key: str) -> str:
    if not 0 < len(key) <= 128 or key.startswith("model-watcher."):
        raise ValueError(f"label {key[:40]!r} must be 1-128 characters, not under model-watcher.")
    return grammar.text(key, f"label {key[:40]!r}", one_line=True)


def _json_map(value: dict[str, Any]) -> dict[str, Any]:
    grammar.check_json_value(value, max_depth=MAX_PARAMETER_DEPTH + 1, max_nodes=MAX_PARAMETER_VALUES)
    return value


Text = Annotated[str, Field(max_length=4096), AfterValidator(grammar.text)]
Line = Annotated[str, Field(max_length=1024), AfterValidator(lambda v: grammar.text(v, one_line=True))]
EnvName = Annotated[str, AfterValidator(grammar.env_name)]
EnvValue = Annotated[str, Field(max_length=32 * 1024), AfterValidator(grammar.env_value)]
Argument = Annotated[str, Field(max_length=32 * 1024), AfterValidator(grammar.argument)]
Port = Annotated[int, Field(strict=True), AfterValidator(grammar.port)]
PortName = Annotated[str, AfterValidator(grammar.port_name)]
LabelKey = Annotated[str, AfterValidator(_label)]
Uri = Annotated[str, AfterValidator(grammar.uri)]
Labels = Annotated[dict[LabelKey, Line], Field(max_length=MAX_MAP_ENTRIES)]


class RuntimeSection(_Strict):
    """Restart-class settings: any change here needs a new model server process/container."""

    image: Annotated[str, AfterValidator(grammar.image_reference)] | None = Field(
        None, description="Container image, e.g. 127.0.0.1:5000/dify/model-server:v1.2.0")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES,
                                         description="names admitted by policy.env.allow")
    args: list[Argument] = Field(default_factory=list, max_length=MAX_MAP_ENTRIES)
    ports: dict[PortName, Port] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES,
                                        description="container port name -> port")
    labels: Labels = Field(default_factory=dict)


class Adapter(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    uri: Uri
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ModelSection(_Strict):
    """Hot-class settings: swapped into the running server through its API where it can."""

    uri: Uri = Field(description="Where the weights live: file:///..., s3://... (policy.uri_schemes)")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights file or manifest"
    )
    signature: Annotated[str, AfterValidator(grammar.text)] | None = Field(
        None, max_length=256, description="base64 ed25519 signature over the sha256 digest")
    implementation: Annotated[str, AfterValidator(grammar.python_path)] | None = Field(
        None, description="server runtime class, e.g. mlserver_sklearn.SKLearnModel")
    parameters: Annotated[dict[str, Any], AfterValidator(_json_map)] = Field(
        default_factory=dict, description="sent to the server as JSON: finite numbers, bounded size")
    adapters: list[Adapter] = Field(default_factory=list, max_length=MAX_MAP_ENTRIES)


class Metadata(_Strict):
    """Recorded in history and shown by `history`; never acted on."""

    model_id: Line | None = None
    training_data_version: Line | None = None
    metrics: dict[Line, float] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)
    created_at: datetime | None = None
    labels: Labels = Field(default_factory=dict)


class HealthOverride(_Strict):
    """Per-model overrides of the daemon's health gate, capped by `[policy.health]`.

    Only a path: the probe always goes to the instance the settings (or the runtime) name,
    so a document cannot make the daemon probe a URL of its choosing.
    """

    path: Annotated[str, AfterValidator(grammar.health_path)] | None = Field(
        None, description="path appended to the instance's base URL")
    expected_status: int | None = Field(None, ge=100, le=599)
    latency_ms: float | None = Field(None, gt=0)
    initial_delay: float | None = Field(None, ge=0)
    period: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    success_threshold: int | None = Field(None, ge=1)
    failure_threshold: int | None = Field(None, ge=1)
    #: Always null. Kept so that specs stored before the rule (`"url": null` in their
    #: canonical JSON) still load from the state; never dumped again.
    url: None = Field(None, exclude=True, description="not allowed: use path")

    @field_validator("url", mode="before")
    @classmethod
    def _no_url(cls, value: object) -> None:
        if value is not None:
            raise ValueError("a document cannot choose the probe URL; the probe goes to the "
                             "instance the settings name (use health.path)")
        return None


class ModelSpec(_Strict):
    """One model's published configuration."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(max_length=128)
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
    data = load_text(text)
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


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, list):
        return "a list"
    return f"a scalar ({type(value).__name__})"


def json_schema() -> dict[str, Any]:
    return ModelSpec.model_json_schema()
