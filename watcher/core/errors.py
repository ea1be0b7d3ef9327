"""The daemon's error hierarchy, so callers branch on types, never on message text.

    WatcherError
    ├── SettingsError          bad daemon settings (CLI exit status 2)
    ├── RejectedError          a document that must not be applied (revision -> rejected)
    │   ├── DocumentError      unparseable / not a mapping / schema violation / too large
    │   ├── PolicyError        semver channel, downgrade, name mismatch, unpinned image
    │   └── VerificationError  weights digest or signature
    ├── ApplyError             applying a valid document failed (revision -> failed)
    │   ├── FetchError         its weights could not be staged (network, auth, disk)
    │   ├── TargetError        a hot swap through the server's API failed
    │   ├── RuntimeStartError  a restart / new instance failed
    │   └── HealthGateError    the health gate did not pass
    ├── SourceError            the config center misbehaved
    │   ├── SourceUnavailable  cannot reach it (retried, reported once per outage)
    │   └── ConflictError      a compare-and-swap publish lost the race (CLI exit status 1)
    └── PluginError            a plug-in kind is unknown or its extra is not installed

Each error carries `reason`: one line fit for a log, `status`, `history` and an alert.
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error the daemon raises on purpose."""

    exit_status = 1

    @property
    def reason(self) -> str:
        return str(self)


class SettingsError(WatcherError):
    exit_status = 2


class PluginError(WatcherError):
    exit_status = 2


class RejectedError(WatcherError):
    """The document is refused; the running server is never touched."""


class DocumentError(RejectedError):
    pass


class PolicyError(RejectedError):
    pass


class VerificationError(RejectedError):
    pass


class ApplyError(WatcherError):
    """Applying an accepted document failed; the last good state keeps serving.

    `rolled_back` is set when the previous spec had to be put back (not merely kept).
    `transient` says the failure was in reaching something (a timeout, a refused
    connection), not in what was asked: the pipeline retries those a few times.
    """

    rolled_back = False

    def __init__(self, *args: object, transient: bool = False) -> None:
        super().__init__(*args)
        self.transient = transient


class FetchError(ApplyError):
    """The weights could not be fetched into the local cache (retries exhausted, access
    refused, not found, disk full). Raised before the apply starts, so the old model keeps
    serving; the revision is failed, not rejected (the document may be fine). The stager
    retried already: the pipeline does not retry it again."""


class TargetError(ApplyError):
    pass


class RuntimeStartError(ApplyError):
    pass


class HealthGateError(ApplyError):
    pass


class SourceError(WatcherError):
    pass


class SourceUnavailable(SourceError):
    pass


class ConflictError(SourceError):
    """A conditional publish found another revision than the one it was told to expect."""
