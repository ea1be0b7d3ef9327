"""What the settings of this host let a document ask for (the settings-dependent grammar).

`spec.py` checks what holds everywhere (a POSIX env name, a valid image reference, a uri
without `..`); this module checks what an operator decides, in the order of `check`:

- `runtime.env`: names admitted by `policy.env` (see childenv.py);
- `model.uri` and every adapter's uri: a scheme from `policy.uri_schemes` (an absolute path
  counts as `file`; a relative path is refused: nothing can vouch for what it resolves to);
- `health`: each override at most `policy.health` (HealthLimits), so a document cannot hold
  an apply slot with a year-long gate; the settings' `health.deadline` bounds the rest.

Called from `policy.check`, so the daemon, `validate` and `publish` give the same verdicts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from watcher.core.childenv import first_refusal
from watcher.core.errors import PolicyError
from watcher.core.spec import ModelSpec

if TYPE_CHECKING:
    from watcher.settings import PolicySettings


def uri_scheme(uri: str) -> str | None:
    """`file` for an absolute path, the scheme of a URI, None for a relative path."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme:
        return scheme
    return "file" if uri.startswith("/") else None


def _check_uri(what: str, uri: str, schemes: tuple[str, ...]) -> None:
    scheme = uri_scheme(uri)
    if scheme is None:
        raise PolicyError(f"{what} {uri[:80]!r} is a relative path; use file:///absolute/path "
                          f"or a URI with one of the schemes in policy.uri_schemes ({', '.join(schemes)})")
    if scheme not in schemes:
        raise PolicyError(f"{what} scheme {scheme!r} is not in policy.uri_schemes "
                          f"({', '.join(schemes) or 'none'})")


def check(spec: ModelSpec, settings: PolicySettings) -> None:
    """Raise PolicyError with the reason when `spec` asks for more than settings allow."""
    reason = first_refusal(spec.runtime.env, settings.env)
    if reason is not None:
        raise PolicyError(reason)
    schemes = tuple(settings.uri_schemes)
    _check_uri("model.uri", spec.model.uri, schemes)
    for adapter in spec.model.adapters:
        _check_uri(f"adapter {adapter.name} uri", adapter.uri, schemes)
    if spec.health is not None:
        limits = settings.health
        asked = spec.health.model_dump(exclude_none=True)
        for field in ("initial_delay", "period", "timeout", "latency_ms",
                      "success_threshold", "failure_threshold"):
            value, cap = asked.get(field), getattr(limits, field)
            if value is not None and value > cap:
                raise PolicyError(f"health.{field} {value:g} is over the {cap:g} that "
                                  f"policy.health.{field} allows")
