"""The rollout record: the policy a publisher chose and the state the controller advances.

It lives in the center beside the document (etcd: `<fleet prefix>rollouts/<model>`; Nacos:
config `rollout.<model>.json` in the fleet group), never in the document: pausing, resuming,
promoting or aborting must not make a new revision, and the document's grammar stays the
spec's alone (docs/fleet.md). It names its document by the sha256 of the document's bytes,
which every daemon can compute from what its source delivered, on etcd and Nacos alike.

Everything here is validated strictly (extra fields forbidden, bounded sizes): a record is
read from a shared center and steers every daemon of a fleet.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from watcher.core.errors import SettingsError
from watcher.core.spec import NAME_PATTERN
from watcher.fleet import hrw

DEFAULT_STEPS = (5.0, 10.0, 30.0, 60.0, 100.0)
MAX_MEMBERS = 10_000
LABEL = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
MEMBER = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
Phase = Literal["pending", "progressing", "paused", "completed", "aborted"]
ACTIVE: tuple[Phase, ...] = ("pending", "progressing", "paused")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    percent: float = Field(gt=0, le=100)
    soak: float | None = Field(None, ge=0, description="seconds healthy before the next step")
    pause: bool = Field(False, description="stop once healthy; `rollout promote` goes on")


class Metric(_Strict):
    """Abort when `members` members of the cohort report `name` above `above`."""

    name: Literal["probe_latency_ms"]
    above: float = Field(gt=0)
    members: int = Field(1, ge=1)


class AbortPolicy(_Strict):
    failed: int = Field(1, ge=1, description="members of the cohort that failed to apply it")
    unhealthy: int = Field(1, ge=1, description="members of the cohort failing soak probes")
    metric: Metric | None = None


class RolloutPolicy(_Strict):
    steps: tuple[Step, ...] = Field(default=tuple(Step(percent=p) for p in DEFAULT_STEPS),
                                    min_length=1, max_length=20)
    soak: float = Field(60.0, ge=0, le=86_400, description="default soak of every step (s)")
    selector: dict[str, str] = Field(default_factory=dict, max_length=16)
    max_unavailable: int = Field(1, ge=1, le=MAX_MEMBERS)
    abort: AbortPolicy = Field(default_factory=AbortPolicy)
    progress_deadline: float = Field(600.0, gt=0, le=7 * 86_400,
                                     description="a step not healthy by then aborts (s)")

    @field_validator("steps", mode="before")
    @classmethod
    def _numbers(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return [{"percent": v} if isinstance(v, int | float) and not isinstance(v, bool)
                    else v for v in value]
        return value

    @field_validator("selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if not re.match(LABEL, k) or not re.match(LABEL, v):
                raise ValueError(f"selector {k!r}={v!r}: labels are [A-Za-z0-9._/-], 1-63 chars")
        return value

    @model_validator(mode="after")
    def _increasing(self) -> RolloutPolicy:
        percents = [s.percent for s in self.steps]
        if any(b <= a for a, b in itertools.pairwise(percents)):
            raise ValueError(f"steps must increase: {percents}")
        if percents[-1] != 100:
            raise ValueError(f"the last step must be 100 (percent of the fleet), not {percents[-1]:g}")
        return self

    def soak_of(self, index: int) -> float:
        step = self.steps[index]
        return self.soak if step.soak is None else step.soak


class StepLog(_Strict):
    step: int = Field(ge=0)
    size: int = Field(ge=0)
    started_at: float
    healthy_at: float | None = None
    ended_at: float | None = None


class RolloutRecord(_Strict):
    id: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    model: str = Field(pattern=NAME_PATTERN)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the document's bytes")
    version: str = Field("", max_length=128)
    #: the center's revision of the document (filled by the controller once it is seen)
    revision: str = Field("", max_length=128)
    #: the revision the fleet served before (informational: each member rolls back to its own)
    previous: str = Field("", max_length=128)
    policy: RolloutPolicy = Field(default_factory=RolloutPolicy)
    phase: Phase = "pending"
    step: int = Field(0, ge=0)
    #: the members the rollout covers (live, selected), as the controller last saw them
    members: tuple[str, ...] = Field(default=(), max_length=MAX_MEMBERS)
    history: tuple[StepLog, ...] = Field(default=(), max_length=100)
    reason: str = Field("", max_length=1000)
    failed: tuple[str, ...] = Field(default=(), max_length=MAX_MEMBERS)
    created_at: float = 0.0
    created_by: str = Field("", max_length=200)
    updated_at: float = 0.0
    #: bumped by every write, so that no two versions of a record have the same bytes
    generation: int = Field(0, ge=0)

    @field_validator("members", "failed")
    @classmethod
    def _ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in value if not re.match(MEMBER, m)]
        if bad:
            raise ValueError(f"not member ids: {bad[:3]}")
        return value

    @model_validator(mode="after")
    def _step_in_range(self) -> RolloutRecord:
        if self.step >= len(self.policy.steps):
            raise ValueError(f"step {self.step} but the policy has {len(self.policy.steps)}")
        return self

    # -- reading ------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def percent(self) -> float:
        return self.policy.steps[self.step].percent

    def covers(self, labels: dict[str, str]) -> bool:
        """A member with `labels` takes part (matches the selector)."""
        return all(labels.get(k) == v for k, v in self.policy.selector.items())

    def cohort(self, step: int | None = None) -> list[str]:
        """The members step `step` (default: the current) covers, in ranking order."""
        index = self.step if step is None else step
        return hrw.cohort(self.members, self.model, self.id, self.policy.steps[index].percent)

    def joins_at(self, member: str) -> int | None:
        return hrw.joins_at(member, self.members, self.model, self.id,
                            [s.percent for s in self.policy.steps])

    def where(self) -> str:
        """`step 2 of 5 (10 % of 20 members)`."""
        return (f"step {self.step + 1} of {len(self.policy.steps)} ({self.percent:g} % of "
                f"{len(self.members)} members)")

    def next(self, **changes: object) -> RolloutRecord:
        """A copy with `changes` and the generation bumped (validated again)."""
        data = self.model_dump()
        data.update(changes)
        data["generation"] = self.generation + 1
        return RolloutRecord.model_validate(data)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> RolloutRecord:
        """Parse a stored record; ValueError with one line when it is not a valid one."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            from watcher.plugins import format_validation_error

            raise ValueError(f"invalid rollout record: {format_validation_error(exc)}") from None


def new_id() -> str:
    return secrets.token_hex(8)


def parse_policy(text: str) -> RolloutPolicy:
    """`publish --rollout`: a YAML or JSON mapping (a file's content or inline flow style);
    empty means the defaults. SettingsError names the field."""
    import yaml

    from watcher.plugins import format_validation_error

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"--rollout: not YAML/JSON: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"--rollout: must be a mapping, got {type(data).__name__}")
    try:
        return RolloutPolicy.model_validate(json.loads(json.dumps(data, default=str)))
    except ValidationError as exc:
        raise SettingsError(f"--rollout: {format_validation_error(exc)}") from None
