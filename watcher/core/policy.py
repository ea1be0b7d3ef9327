"""Release policy: which semver channels an environment accepts, and no silent downgrade.

Channels (see spec.Version): `v1.2.0` release, `v1.2.1-hotfix` hotfix, `v1.3.0-dev` dev; a
channel is a whole pre-release (`hotfix`, `hotfix.2`, `rc1`), so `-hotfix-dev` or `-release`
are the unnamed `pre` channel, which no default environment list accepts. Which channels each
environment accepts is a setting (production: release and hotfix by default). A version lower
than the applied one is refused unless it comes through `rollback`. What the host's settings
let a document ask for (env names, uri schemes, health caps) is admission.py, checked here
too. The full table of verdicts is in docs/trust.md and pinned by
tests/unit/core/test_policy.py.
"""

from __future__ import annotations

from watcher.core import admission
from watcher.core.errors import PolicyError
from watcher.core.spec import ModelSpec, Version
from watcher.settings import PolicySettings


def allowed_channels(settings: PolicySettings, environment: str) -> list[str] | None:
    """The channels `environment` accepts; None means every channel."""
    return settings.channels.get(environment)


def check(
    spec: ModelSpec,
    *,
    environment: str,
    settings: PolicySettings,
    applied: ModelSpec | None = None,
    rollback: bool = False,
) -> None:
    """Raise PolicyError with the reason when `spec` must not run in `environment`."""
    version = spec.semver
    allowed = allowed_channels(settings, environment)
    if allowed is not None and version.channel not in allowed:
        raise PolicyError(
            f"version {version} is on the {version.channel!r} channel, which environment "
            f"{environment!r} does not accept (accepted: {', '.join(allowed) or 'none'})"
        )
    image = spec.runtime.image or ""
    if image and settings.require_image_digest and "@sha256:" not in image:
        raise PolicyError(
            f"runtime.image {image} is not pinned by digest (@sha256:...), which "
            "policy.require_image_digest demands"
        )
    tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
    if allowed is not None and tag and tag != version.text:
        try:
            tag_channel = Version(tag).channel
        except ValueError:
            tag_channel = None
        if tag_channel is not None and tag_channel not in allowed:
            raise PolicyError(
                f"image tag {tag!r} is on the {tag_channel!r} channel, which environment "
                f"{environment!r} does not accept"
            )
    admission.check(spec, settings)
    if applied is not None and not rollback and not settings.allow_downgrade and version < applied.semver:
        raise PolicyError(
            f"version {version} is lower than the applied {applied.version}; "
            "a downgrade goes through `model-watcher rollback`"
        )


def verdict(
    spec: ModelSpec,
    *,
    environment: str,
    settings: PolicySettings,
    applied: ModelSpec | None = None,
    rollback: bool = False,
) -> str:
    """`"accept"` or `"refuse: <reason>"`: `check` as a value, for tables and `validate`."""
    try:
        check(spec, environment=environment, settings=settings, applied=applied, rollback=rollback)
    except PolicyError as exc:
        return f"refuse: {exc.reason}"
    return "accept"
