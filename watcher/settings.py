"""Daemon settings: a TOML file overridden by MODEL_WATCHER_* environment variables.

Precedence: explicit arguments > environment (nested with `__`, e.g.
MODEL_WATCHER_SOURCE__PATH) > TOML file > defaults. Plug-in sections (`source`, `target`,
`runtime`) carry a `kind` plus options that the chosen plug-in validates itself, so the core
needs no optional SDK to load settings. Loading never exits: it raises SettingsError with
one line per problem naming the field; the CLI turns that into exit status 2.
"""

from __future__ import annotations

import json
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from watcher.core.childenv import EnvPolicy
from watcher.core.errors import SettingsError
from watcher.core.health import HealthCheck, HealthLimits
from watcher.observability.logs import register_secrets_in
from watcher.plugins import format_validation_error

DEFAULT_PATHS = (Path("/etc/model-watcher/watcher.toml"), Path("config/watcher.toml"))
_toml_path: ContextVar[Path | None] = ContextVar("_toml_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginSection(BaseModel):
    """`kind` picks the plug-in; every other key is that plug-in's own option."""

    model_config = ConfigDict(extra="allow")
    kind: str

    def options(self) -> dict[str, Any]:
        return {"kind": self.kind, **(self.model_extra or {})}


class ReconcileSettings(_Section):
    wait_min: float = Field(0.2, ge=0, description="quiescence: quiet time before acting")
    wait_max: float = Field(2.0, ge=0, description="quiescence: act at the latest after this")
    #: a document is refused unread above this (docs/security.md: the parser's bounds)
    max_document_bytes: int = Field(256 * 1024, gt=0, le=4 * 1024 * 1024)
    on_delete: Literal["keep", "unload"] = "keep"
    max_parallel: int = Field(4, ge=1, description="models applied at once (one model server is behind them all)")
    fallback_to_restart: bool = True
    shutdown_grace: float = Field(30.0, ge=0, description="SIGTERM: let the current step finish")
    apply_timeout: float = Field(900.0, gt=0, description="deadline of one revision's handling "
                                 "(pull, start, health gate included); past it: failed")
    retries: int = Field(2, ge=0, le=10, description="retries of a transient apply failure")
    retry_backoff: float = Field(1.0, gt=0, le=60, description="first retry delay, doubling")
    history_limit: int = Field(500, ge=10, description="history rows kept per model")
    history_stable: int = Field(20, ge=1, description="stable rows (rollback targets) kept "
                                "per model beyond history_limit")

    @model_validator(mode="after")
    def _min_le_max(self) -> ReconcileSettings:
        if self.wait_max and self.wait_min > self.wait_max:
            raise ValueError(f"wait_min ({self.wait_min}) must not exceed wait_max ({self.wait_max})")
        return self


class PolicySettings(_Section):
    #: environment -> channels it accepts ("release", "hotfix", "dev", "rc", ...); an
    #: environment absent here accepts every channel.
    channels: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "production": ["release", "hotfix"],
            "staging": ["release", "hotfix", "rc"],
        }
    )
    allow_downgrade: bool = False
    require_image_digest: bool = False
    #: what `runtime.env` may set for a process on this host, and the base it starts from
    env: EnvPolicy = Field(default_factory=EnvPolicy)
    #: schemes `model.uri` and adapters' uris may use (an absolute path counts as file);
    #: plain `http` is left out: add it where a loopback artifact server is trusted
    uri_schemes: list[str] = Field(
        default_factory=lambda: ["file", "s3", "gs", "hf", "https", "oci"])
    #: the most a document's `health` overrides may ask for
    health: HealthLimits = Field(default_factory=HealthLimits)


class TrustSettings(_Section):
    verify_digest: bool = True
    require_digest: bool = False
    require_signature: bool = False
    #: ed25519 public keys: paths to PEM/raw files or inline base64 of the 32 raw bytes.
    trusted_keys: list[str] = Field(default_factory=list)
    #: roots under which file:// weights may live; empty = anywhere.
    allowed_roots: list[Path] = Field(default_factory=list)


class ApiSettings(_Section):
    """The loopback HTTP listener: /healthz, /status, /metrics, webhooks."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


#: Sections whose keys the core does not type (plug-in options, feature settings).
_FREE_FORM = ("source", "target", "runtime", "router", "webhook", "alerts", "tracing", "weights")


def _decode_json_values(value: Any) -> Any:
    """A JSON list or table given as a string becomes that list or table (recursively)."""
    if isinstance(value, dict):
        return {k: _decode_json_values(v) for k, v in value.items()}
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, (list, dict)) else value
    return value


class _EnvSource(EnvSettingsSource):
    """MODEL_WATCHER_* variables. pydantic-settings decodes JSON only for fields it knows
    the type of; a plug-in's options are untyped here (the plug-in validates them), so
    `MODEL_WATCHER_SOURCE__ENDPOINTS='["http://etcd:2379"]'` would reach it as a string.
    Lists and tables written as JSON are decoded for those sections (a container's
    settings often come from environment variables alone)."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for section in _FREE_FORM:
            if isinstance(data.get(section), dict):
                data[section] = _decode_json_values(data[section])
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODEL_WATCHER_", env_nested_delimiter="__", extra="forbid"
    )

    environment: str = "development"
    state_dir: Path = Path("state")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "text", "json", "journal"] = "auto"

    source: PluginSection = Field(
        default_factory=lambda: PluginSection(kind="localdir", path="config/models")
    )
    target: PluginSection | None = None
    runtime: PluginSection | None = None
    #: Traffic between a runtime's old and new instances (nginx weights); with a runtime that
    #: starts instances beside each other (docker).
    router: PluginSection | None = None
    health: HealthCheck = Field(default_factory=HealthCheck)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    #: Free-form sections owned by optional features (webhook, alerts, tracing);
    #: each feature validates its own.
    webhook: dict[str, Any] = Field(default_factory=dict)
    alerts: dict[str, Any] = Field(default_factory=dict)
    tracing: dict[str, Any] = Field(default_factory=dict)
    #: Remote weights: fetchers, cache and staging (validated by watcher/fetchers/options.py).
    weights: dict[str, Any] = Field(default_factory=dict)
    #: Fleet membership, rollouts, restart limit (validated by watcher/fleet/settings.py).
    fleet: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls)]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def path(self) -> Path | None:
        return _loaded_from.get(id(self))


_loaded_from: dict[int, Path | None] = {}


def resolve_path(explicit: str | Path | None) -> Path | None:
    """`--config PATH` (must exist), else the first default that exists, else None."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise SettingsError(f"settings file {p} does not exist")
        return p
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate; SettingsError (one line per problem) on anything wrong."""
    resolved = resolve_path(path)
    if resolved is not None:
        try:
            tomllib.loads(resolved.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {resolved}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise SettingsError(f"settings file {resolved}: {exc.strerror}") from None
    token = _toml_path.set(resolved)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        where = f"settings ({resolved})" if resolved else "settings"
        raise SettingsError(f"{where}: {format_validation_error(exc)}") from None
    finally:
        _toml_path.reset(token)
    _loaded_from[id(settings)] = resolved
    # Passwords and tokens of every plug-in and feature are masked in logs from here on.
    register_secrets_in(settings.model_dump(mode="python"))
    return settings
