"""Logging: readable lines on a terminal, native journal entries under systemd, JSON lines elsewhere.

JSON keys: ts, level, logger, event (the message), and model, revision, reason, trace_id
when the call passes them in `extra`. A redaction filter masks registered secrets in every
record, as a second line of defence behind SecretStr.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

STABLE_KEYS = ("model", "revision", "version", "reason", "plan", "trace_id", "source", "outcome")
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (passwords, tokens, HMAC keys)."""
    if value and len(value) >= 4:
        _secrets.add(value)


#: option names whose values are secrets (etcd/Nacos `password`, targets' `token`, webhook
#: `secret`, `bearer_token`, `api_key`, `secret_key`, `authorization` headers...). Names that
#: only point at a secret (`*_env`, `*_file`, `*_path`) hold no secret themselves.
SECRET_NAME = re.compile(r"(?i)(passw(or)?d|token|secret|api[_-]?key|access[_-]?key|credential"
                         r"|authorization|private[_-]?key)(?!.*_(env|file|path)$)")


def register_secrets_in(tree: Any, *, under_secret: bool = False) -> None:
    """Register every secret value in a settings tree (dicts, lists, SecretStr leaves).

    Called once per settings load (start and SIGHUP), so a plug-in cannot forget to mask its
    password: the rule is the option's name, not the plug-in's code.
    """
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            register_secrets_in(value, under_secret=under_secret or bool(SECRET_NAME.search(str(key))))
    elif isinstance(tree, list | tuple):
        for value in tree:
            register_secrets_in(value, under_secret=under_secret)
    elif hasattr(tree, "get_secret_value"):
        secret = tree.get_secret_value()
        register_secret(secret if isinstance(secret, str) else None)
    elif under_secret and isinstance(tree, str):
        register_secret(tree)


def redact(text: str) -> str:
    for s in _secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key in STABLE_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={getattr(record, k)}" for k in ("model", "revision") if getattr(record, k, None)
        )
        line = super().format(record)
        return redact(f"{line}  [{extras}]" if extras else line)


def setup(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure the root logger once for the process (idempotent).

    `auto`: text on a terminal, journal entries when systemd connected stderr to the journal
    (observability/journal.py: fields and priorities), else JSON lines."""
    from watcher.observability import journal

    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "journal" if journal.stderr_is_journal() else "json"
    handler: logging.Handler
    if fmt == "journal":
        handler = journal.JournalHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "watchdog", "grpc", "nacos", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
