"""The grammar of each place a document's value goes to, as plain checks.

Each function raises ValueError with a one-line reason (pydantic turns it into the schema
error `path: reason`); none depends on settings (what settings allow is `admission.py`).

    env name        POSIX: [A-Za-z_][A-Za-z0-9_]*  (execve and systemd take nothing else)
    env value       no NUL (execve cannot carry it), no line break or other control
                    character (the systemd runtime writes a line-based EnvironmentFile)
    argument        no NUL (argv is a C string array; everything else is passed verbatim,
                    never through a shell)
    port            1-65535, an int (not a bool)
    image           an OCI reference in the distribution/reference grammar
    uri             no whitespace or control characters, no `..` segment even when
                    percent-encoded (once or twice), file:// names no host
    health path     an absolute path (+ query) on the instance's own base URL
    JSON value      what is sent to servers as JSON: string keys, finite numbers, 64-bit
                    ints, no NUL / control characters in text, bounded depth and size

Free text (metadata, parameters) may hold tab and line breaks; no other C0/C1 control
character passes anywhere, so a value cannot rewrite a terminal running `history` or forge a
line in a text log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: C0 and C1 controls and DEL, except tab, LF and CR (allowed in free text); lone surrogates
#: (not encodable as UTF-8: logs, SQLite and servers would fail on them).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: the same plus LF and CR: values that must stay on one line
_CONTROL_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")

# distribution/reference (reference/regexp.go), with Go's ASCII \w spelled out.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
NAME_TOTAL_LENGTH_MAX = 255  # distribution's limit on the name part

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_PCHAR = r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]"
HEALTH_PATH = re.compile(rf"/{_PCHAR}*(?:\?(?:{_PCHAR}|\?)*)?")
PORT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?")
PYTHON_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_URI = 2048


def text(value: str, what: str = "text", *, one_line: bool = False) -> str:
    """No control character (`one_line`: not even a line break), no lone surrogate."""
    bad = (_CONTROL_LINE if one_line else _CONTROL).search(value)
    if bad is not None:
        raise ValueError(f"{what} contains the control character {bad.group()!r} "
                         f"at position {bad.start()}")
    return value


def env_name(name: str) -> str:
    if not ENV_NAME.fullmatch(name):
        raise ValueError(f"{name[:64]!r} is not a POSIX environment variable name "
                         "([A-Za-z_][A-Za-z0-9_]*)")
    return name


def env_value(value: str, name: str = "value") -> str:
    # A tab is allowed (ordinary in values); a line break would end the EnvironmentFile line.
    text(value.replace("\t", " "), f"the value of {name}", one_line=True)
    return value


def argument(value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"argument {value[:40]!r} contains a NUL character")
    return value


def port(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"port {value!r} is not in 1-65535")
    return value


def port_name(name: str) -> str:
    if not PORT_NAME.fullmatch(name):
        raise ValueError(f"port name {name[:40]!r} is not 1-15 lowercase letters, digits or '-'")
    return name


def image_reference(ref: str) -> str:
    if len(ref) > NAME_TOTAL_LENGTH_MAX + 200:
        raise ValueError(f"image reference is {len(ref)} characters long")
    m = IMAGE_REFERENCE.fullmatch(ref)
    if m is None:
        raise ValueError(f"{ref[:80]!r} is not a valid image reference "
                         "([registry[:port]/]repository[:tag][@digest], lowercase repository)")
    if len(m["name"]) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"image name is longer than {NAME_TOTAL_LENGTH_MAX} characters")
    first, slash, _ = m["name"].partition("/")
    is_domain = slash and ("." in first or ":" in first or first == "localhost" or first[0] == "[")
    if not is_domain and not re.fullmatch(_PATH_COMPONENT, first):
        # as docker normalises: a first part without '.' or ':' is a repository, not a host
        raise ValueError(f"image repository {first!r} must be lowercase (a registry host has a '.' or ':')")
    return ref


def python_path(value: str) -> str:
    if len(value) > 256 or not PYTHON_PATH.fullmatch(value):
        raise ValueError(f"{value[:64]!r} is not a dotted Python name (package.module.Class)")
    return value


def _dot_dot(path: str) -> bool:
    """A `..` segment in `path`, as given or percent-decoded once or twice."""
    once = unquote(path)
    return any(".." in p.replace("\\", "/").split("/") for p in (path, once, unquote(once)))


def uri(value: str) -> str:
    """Syntax only; which schemes are accepted is `policy.uri_schemes` (admission.py)."""
    if not value or len(value) > MAX_URI:
        raise ValueError(f"uri must be 1-{MAX_URI} characters")
    if re.search(r"\s", value) or _CONTROL.search(value):
        raise ValueError(f"uri {value[:80]!r} contains whitespace or a control character")
    decoded = unquote(unquote(value))
    if _CONTROL.search(decoded):
        raise ValueError(f"uri {value[:80]!r} encodes a control character")
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. an unbalanced '[' in the host
        raise ValueError(f"uri {value[:80]!r} cannot be parsed: {exc}") from None
    if parts.scheme and not _SCHEME.fullmatch(parts.scheme):
        raise ValueError(f"uri scheme {parts.scheme[:20]!r} is not valid")
    if _dot_dot(parts.path):
        raise ValueError(f"uri {value[:80]!r} has a '..' path segment")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise ValueError(f"file uri {value[:80]!r} names a host; use file:///path")
    return value


def health_path(value: str) -> str:
    if len(value) > 512 or not HEALTH_PATH.fullmatch(value) or value.startswith("//"):
        raise ValueError(f"{value[:80]!r} is not an absolute path on the instance "
                         "(/path[?query], no host, no scheme)")
    if _dot_dot(value.partition("?")[0]):
        raise ValueError(f"{value[:80]!r} has a '..' path segment")
    return value


def check_json_value(value: Any, *, max_depth: int, max_nodes: int, where: str = "") -> int:
    """Refuse what cannot go to a server as JSON; return the number of values walked."""
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise ValueError(f"{where or 'document'} has more than {max_nodes} values")
        if depth > max_depth:
            raise ValueError(f"{path or 'document'} nests deeper than {max_depth} levels")
        if isinstance(item, str):
            text(item, path or "text")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -(2**63) <= item < 2**63:
                raise ValueError(f"{path or 'integer'} does not fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{path or 'number'} is {item} (NaN and Infinity are not allowed)")
        elif isinstance(item, Mapping | list | tuple) and len(item) > max_nodes:
            raise ValueError(f"{path or 'document'} has more than {max_nodes} values")
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{path or 'mapping'} has the non-string key {key!r}")
                text(key, f"key {key[:40]!r}", one_line=True)
                shown = key if key.isprintable() else repr(key)
                stack.append((sub, f"{path}.{shown}" if path else shown, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item))
        else:
            raise ValueError(f"{path or 'value'} is a {type(item).__name__}, which JSON cannot carry")
    return nodes
