"""What a document may put into the environment of a process on this host, and that environment.

A model server started by the `command` or `systemd` runtime runs as a host process, so an
environment variable is code: `LD_PRELOAD`, `PATH`, `PYTHONPATH`, `GCONV_PATH`,
`BASH_ENV`... each decides what runs. So:

- the child's environment is built from `policy.env.base` (settings) plus the document's
  admitted `runtime.env` plus the daemon's own `MODEL_WATCHER_*` facts, and never from the
  daemon's own environment (which holds its secrets: webhook keys, source passwords);
- a document's name is admitted only when `policy.env.allow` lists it (an exact name or a
  `PREFIX*` pattern; the default list is empty: nothing is admitted);
- PROTECTED names (loader, interpreter, shell and TLS knobs) pass only when `allow` names
  them exactly: a pattern such as `*` or `LD*` never admits them;
- `MODEL_WATCHER_*` is the daemon's own and never comes from a document.

`refusal` is the one check: admission (policy.check, hence validate/publish/daemon) turns it
into a PolicyError, `child_env` (the runtimes, again at start) into a RuntimeStartError.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from watcher.core import grammar

RESERVED_PREFIX = "MODEL_WATCHER_"
#: fnmatch patterns, matched case-insensitively. Sources: glibc's UNSECURE_ENVVARS, sudo's
#: env_delete list, and the interpreters a model server is likely to be (Python, Node, JVM).
PROTECTED: tuple[str, ...] = (
    "LD_*", "DYLD_*", "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN",
    "LOCPATH", "MALLOC_*", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR",
    "TZDIR", "PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "BASH_FUNC_*", "BASHOPTS", "SHELLOPTS",
    "CDPATH", "GLOBIGNORE", "IFS", "PS4", "PROMPT_COMMAND", "PYTHON*", "VIRTUAL_ENV", "CONDA_*",
    "PERL*", "RUBY*", "GEM_*", "NODE_*", "NPM_CONFIG_*", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS", "CLASSPATH", "LUA_*", "TCL*", "GIT_*", "SSL_CERT_*", "OPENSSL_*",
    "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "*_PROXY", "KRB5*", "XDG_*", "SYSTEMD_*",
    "NOTIFY_SOCKET", "LISTEN_*", "CREDENTIALS_DIRECTORY", "LANG", "LANGUAGE", "LC_*",
)
DEFAULT_BASE = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class EnvPolicy(BaseModel):
    """`[policy.env]`: which `runtime.env` names a document may set; the child's base env."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: exact names or `PREFIX*` patterns a document may set; PROTECTED names only by exact name
    allow: tuple[str, ...] = ()
    #: the environment every command/systemd child starts from (nothing is inherited)
    base: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_BASE))

    @field_validator("allow")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            grammar.env_name(item.removesuffix("*") or "_")
            if item.startswith(RESERVED_PREFIX):
                raise ValueError(f"{item}: MODEL_WATCHER_* is the daemon's own")
        return value

    @field_validator("base")
    @classmethod
    def _base(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            grammar.env_name(name)
            grammar.env_value(text, name)
        return value


def protected(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(RESERVED_PREFIX) or any(fnmatch.fnmatchcase(upper, p) for p in PROTECTED)


def refusal(name: str, value: str, policy: EnvPolicy) -> str | None:
    """Why `name=value` from a document must not reach a host process; None when it may."""
    try:
        grammar.env_name(name)
        grammar.env_value(value, name)
    except ValueError as exc:
        return str(exc)
    if name.upper().startswith(RESERVED_PREFIX):
        return f"{name} is reserved for the daemon (MODEL_WATCHER_*)"
    if name in policy.allow:
        return None
    if protected(name):
        return (f"{name} is a protected variable (it can change what the server process runs); "
                "only an exact entry in policy.env.allow admits it")
    if any(p.endswith("*") and name.startswith(p[:-1]) for p in policy.allow):
        return None
    return f"{name} is not in policy.env.allow ({', '.join(policy.allow) or 'empty'})"


def first_refusal(env: Mapping[str, str], policy: EnvPolicy) -> str | None:
    for name, value in env.items():
        reason = refusal(name, value, policy)
        if reason is not None:
            return f"runtime.env: {reason}"
    return None


def child_env(document_env: Mapping[str, str], own: Mapping[str, str], policy: EnvPolicy,
              *, base: bool = True) -> dict[str, str]:
    """The environment of a host process: base + admitted document env + the daemon's facts.

    Raises ValueError with the reason when the document's env is not admitted (the caller
    raises its own error type with it). `base=False` for an EnvironmentFile, which systemd
    adds to the unit's own environment.
    """
    reason = first_refusal(document_env, policy)
    if reason is not None:
        raise ValueError(reason)
    env = dict(policy.base) if base else {}
    env.update(document_env)
    for name, value in own.items():
        grammar.env_name(name)
        grammar.env_value(value, name)
        env[name] = value
    return env
