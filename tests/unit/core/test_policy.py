"""The channel policy table: each version string x environment -> the verdict docs/trust.md gives.

Default settings: production accepts release+hotfix, staging release+hotfix+rc, any other
environment (development, ...) every channel. Keep this table and the one in docs/trust.md
in step.
"""

from __future__ import annotations

import pytest

from watcher.core import policy
from watcher.core.errors import DocumentError, PolicyError
from watcher.core.spec import ModelSpec, Version, parse_document
from watcher.settings import PolicySettings

A, R = "accept", "refuse"
ENVIRONMENTS = ("production", "staging", "development")

#: version string, its channel, verdict in production, staging, development
TABLE: list[tuple[str, str, str, str, str]] = [
    ("v1.2.0",               "release", A, A, A),
    ("1.2.0",                "release", A, A, A),
    ("v1.2.0+build.7",       "release", A, A, A),
    ("v1.2.1-hotfix",        "hotfix",  A, A, A),
    ("v1.2.1-hotfix.2",      "hotfix",  A, A, A),
    ("v1.2.1-HOTFIX",        "hotfix",  A, A, A),
    ("v1.2.1-hotfix2",       "hotfix",  A, A, A),
    ("v1.3.0-rc.1",          "rc",      R, A, A),
    ("v1.3.0-rc1",           "rc",      R, A, A),
    ("v1.3.0-dev",           "dev",     R, R, A),
    ("v1.3.0-dev.20261128",  "dev",     R, R, A),
    ("v1.3.0-beta",          "beta",    R, R, A),
    ("v2.0.0-1",             "pre",     R, R, A),
    # the channel is the WHOLE pre-release: a word that merely starts with a channel name
    # (or names `release` itself) is the unnamed `pre` channel
    ("v1.2.1-hotfix-dev",    "pre",     R, R, A),
    ("v1.2.1-hotfix.dev",    "pre",     R, R, A),
    ("v1.2.1-hotfixes",      "hotfixes", R, R, A),
    ("v1.2.1-release",       "pre",     R, R, A),
    ("v1.2.1-release.1",     "pre",     R, R, A),
    ("v1.2.1-rc1-hotfix",    "pre",     R, R, A),
    ("v1.2.1-hotfix.2.dev",  "pre",     R, R, A),
]

#: not semver: the document itself is rejected (DocumentError), in every environment
INVALID = ["1.2", "v1.2", "latest", "v1.2.0-", "v01.2.0", "v1.2.0.0", "", "V1.2.0"]


def make(version: str, image: str | None = None) -> ModelSpec:
    runtime = {"image": image} if image else {}
    return ModelSpec.model_validate({"name": "m", "version": version, "runtime": runtime,
                                     "model": {"uri": "file:///srv/m"}})


@pytest.mark.parametrize(("version", "channel", "prod", "staging", "dev"), TABLE)
def test_channel_table(version: str, channel: str, prod: str, staging: str, dev: str) -> None:
    spec = make(version)
    assert Version(version).channel == channel
    for environment, want in zip(ENVIRONMENTS, (prod, staging, dev), strict=True):
        got = policy.verdict(spec, environment=environment, settings=PolicySettings())
        assert got.split(":")[0] == want, (version, environment, got)
        if want == R:
            assert f"{channel!r} channel" in got and environment in got


@pytest.mark.parametrize("version", INVALID)
def test_invalid_versions_reject_the_document(version: str) -> None:
    raw = f"name: m\nversion: '{version}'\nmodel: {{uri: 'file:///srv/m'}}\n".encode()
    with pytest.raises(DocumentError, match="version"):
        parse_document(raw)


def test_channels_are_a_setting() -> None:
    settings = PolicySettings(channels={"production": ["release"], "lab": []})
    assert policy.verdict(make("v1.2.1-hotfix"), environment="production",
                          settings=settings).startswith("refuse")
    assert policy.verdict(make("v1.2.0"), environment="lab",
                          settings=settings).startswith("refuse")
    assert policy.verdict(make("v1.3.0-dev"), environment="anything-else",
                          settings=settings) == A


#: applied version, new version, verdict without rollback, verdict through rollback
DOWNGRADES = [
    ("v1.2.0", "v1.2.0",         A, A),  # re-publish of the same version
    ("v1.2.0", "v1.2.0+build.2", A, A),  # build metadata has no precedence
    ("v1.2.0", "v1.2.1-hotfix",  A, A),
    ("v1.2.1-hotfix", "v1.2.1",  A, A),  # the release outranks its own hotfix pre-release
    ("v1.2.0", "v1.3.0",         A, A),
    ("v1.2.0", "v1.1.9",         R, A),
    ("v1.2.0", "v1.2.0-hotfix",  R, A),  # a pre-release of the same version ranks lower
    ("v1.2.1", "v1.2.1-hotfix",  R, A),
    ("v2.0.0", "v1.9.9",         R, A),
    ("v1.10.0", "v1.9.0",        R, A),  # numeric, not lexical
    ("v1.3.0-rc.10", "v1.3.0-rc.2", R, A),
]


@pytest.mark.parametrize(("applied", "new", "plain", "via_rollback"), DOWNGRADES)
def test_no_silent_downgrade(applied: str, new: str, plain: str, via_rollback: str) -> None:
    settings = PolicySettings()
    for rollback, want in ((False, plain), (True, via_rollback)):
        got = policy.verdict(make(new), environment="staging", settings=settings,
                             applied=make(applied), rollback=rollback)
        assert got.split(":")[0] == want, (applied, new, rollback, got)
    if plain == R:
        assert "model-watcher rollback" in policy.verdict(
            make(new), environment="staging", settings=settings, applied=make(applied))
        assert policy.verdict(make(new), environment="staging", applied=make(applied),
                              settings=PolicySettings(allow_downgrade=True)) == A


def test_rollback_does_not_bypass_channels() -> None:
    got = policy.verdict(make("v1.1.0-dev"), environment="production", settings=PolicySettings(),
                         applied=make("v1.2.0"), rollback=True)
    assert got.startswith("refuse") and "'dev' channel" in got


@pytest.mark.parametrize(("image", "want"), [
    ("127.0.0.1:5000/dify/model-server:v1.2.0", A),
    ("127.0.0.1:5000/dify/model-server:v1.3.0-dev", R),   # dev image under a release doc
    ("127.0.0.1:5000/dify/model-server:latest", A),       # not semver: no channel to judge
    ("127.0.0.1:5000/dify/model-server", A),
    ("127.0.0.1:5000/dify/model-server:v1.2.0@sha256:" + "a" * 64, A),
])
def test_image_tag_channel_in_production(image: str, want: str) -> None:
    got = policy.verdict(make("v1.2.0", image), environment="production", settings=PolicySettings())
    assert got.split(":")[0] == want, got


def test_image_digest_pin_when_required() -> None:
    settings = PolicySettings(require_image_digest=True)
    with pytest.raises(PolicyError, match="not pinned by digest"):
        policy.check(make("v1.2.0", "r/m:v1.2.0"), environment="production", settings=settings)
    policy.check(make("v1.2.0", "r/m@sha256:" + "b" * 64), environment="production",
                 settings=settings)
    policy.check(make("v1.2.0"), environment="production", settings=settings)  # no image
