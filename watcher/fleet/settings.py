"""`[fleet]` settings, validated here (watcher/settings.py keeps the section free-form, as it
does for webhook and alerts), so the core needs nothing of the fleet to load settings.

    [fleet]
    enabled = true
    member_id = "gpu-host-17"            # default: the host name
    labels = { zone = "a", pool = "a100" }
    ttl = 10                             # liveness: lease TTL (etcd), seconds
    prefix = "/model-watcher/fleet/"     # etcd: where members, rollouts, slots live
    group = "MODEL_WATCHER_FLEET"        # Nacos: the group of the naming service and records
    probe_interval = 2.0                 # soak probes of a rollout's revision
    max_unavailable = 0                  # restarts at once outside a rollout; 0 = no limit

The fleet talks to the same center as the source, with the source's connection settings
(endpoints, credentials, TLS). localdir is single-host: a fleet there is a settings error.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from watcher.core.errors import SettingsError
from watcher.fleet.record import LABEL, MEMBER
from watcher.plugins import parse_options
from watcher.settings import Settings

CENTERS = ("etcd", "nacos")


def _host() -> str:
    """The host name as a member id ([A-Za-z0-9._:-]; anything else becomes '-')."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname()).strip("-._:") or "host"
    return name[:128]


class FleetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    member_id: str = Field(default_factory=_host, pattern=MEMBER)
    labels: dict[str, str] = Field(default_factory=dict, max_length=16)
    ttl: float = Field(10.0, ge=2, le=300, description="liveness: a dead member is gone after it")
    prefix: str = Field("/model-watcher/fleet/", min_length=2, description="etcd key prefix")
    group: str = Field("MODEL_WATCHER_FLEET", min_length=1, description="Nacos group")
    service: str = Field("model-watcher", min_length=1, description="Nacos naming service")
    probe_interval: float = Field(2.0, gt=0, le=300)
    max_unavailable: int = Field(0, ge=0, description="restarts at once outside a rollout; 0 = any")
    discovery_interval: float = Field(5.0, gt=0, description="Nacos: re-list rollout records")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if not re.match(LABEL, k) or not re.match(LABEL, v):
                raise ValueError(f"label {k!r}={v!r}: labels are [A-Za-z0-9._/-], 1-63 chars")
        return value

    @property
    def renew_interval(self) -> float:
        """Lease renewals: three chances before the TTL runs out."""
        return self.ttl / 3


def fleet_settings(settings: Settings, *, require_enabled: bool = True) -> FleetSettings | None:
    """The validated `[fleet]` section; None when the fleet is off (unless not
    `require_enabled`: the CLI steers rollouts from hosts that run no daemon). SettingsError
    when it is invalid or asked of a single-host source."""
    raw: dict[str, Any] = dict(settings.fleet)
    if not raw and require_enabled:
        return None
    fleet = parse_options(FleetSettings, raw, "fleet")
    if not fleet.enabled and require_enabled:
        return None
    kind = settings.source.kind
    if kind not in CENTERS:
        raise SettingsError(f"fleet: source {kind!r} is single-host; a fleet needs a shared "
                            f"config center ({' or '.join(CENTERS)})")
    if kind == "etcd":
        docs = str(settings.source.options().get("prefix", "/model-watcher/models/"))
        if fleet.prefix.startswith(docs) or docs.startswith(fleet.prefix):
            raise SettingsError(f"fleet.prefix {fleet.prefix!r} and source.prefix {docs!r} "
                                "must not contain each other")
    return fleet
