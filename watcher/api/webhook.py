"""Authenticated webhooks: HMAC-SHA256 with a timestamp, a replay window, a size limit.

A sender signs `"{timestamp}." + body` with the shared secret and sends

    X-Model-Watcher-Timestamp: 1764338400            (unix seconds)
    X-Model-Watcher-Signature: sha256=<hex digest>

(the header names are settings). Refused, in this order, with the status the API answers:
body over `max_body_bytes` 413; missing headers 401; a timestamp that is not whole unix seconds
or is more than `replay_window` seconds away 401; wrong signature 401 (compared in constant
time); a signature already seen inside the window 409. Only then is the body parsed (400
when it is not what the endpoint expects). Logs name the reason and the peer, never the
secret, the signature or the body.

`POST /hooks/model-updated` (model registries notify on `model_updated`) carries no config:
an accepted event only asks the reconciler to re-read that model's key at once, the config
center stays the truth. Accepted payload shapes: `{"event": "model_updated", "model": "qwen-chat"}`,
`{"model": {"name": "qwen-chat", ...}}`, `{"model_name": ...}` or `{"name": ...}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from watcher.core.errors import DocumentError, SettingsError, WatcherError
from watcher.core.loader import MAX_DEPTH, json_depth
from watcher.core.spec import NAME_PATTERN
from watcher.observability.logs import register_secret
from watcher.plugins import parse_options

if TYPE_CHECKING:
    from watcher.features import FeatureContext, Operator

log = logging.getLogger("watcher.api.webhook")

Reply = tuple[int, dict[str, Any]]
_NAME = re.compile(NAME_PATTERN)
_MAX_REMEMBERED = 100_000
#: whole unix seconds, as signed: ASCII digits only (no sign, fraction, exponent, NaN or inf)
_SECONDS = re.compile(r"[0-9]{1,12}")


class AlertmanagerSettings(BaseModel):
    """`[webhook.alertmanager]`: how Alertmanager alerts map to self-healing actions."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    #: Alertmanager's own `http_config.authorization` (it cannot compute our HMAC).
    bearer_token: SecretStr | None = None
    model_label: str = "model"
    action_label: str = "action"
    actions: list[str] = Field(default_factory=lambda: ["rollback", "restart", "resync"])
    #: alertname -> action, for alerts that carry no action label
    alertname_actions: dict[str, str] = Field(default_factory=dict)
    #: how long a handled group is remembered (a repeat inside it does nothing)
    group_memory: float = Field(7 * 86400.0, gt=0)


class WebhookSettings(BaseModel):
    """`[webhook]`: shared secret and limits for every `POST /hooks/...` endpoint."""

    model_config = ConfigDict(extra="forbid")
    secret: SecretStr | None = None
    timestamp_header: str = "X-Model-Watcher-Timestamp"
    signature_header: str = "X-Model-Watcher-Signature"
    replay_window: float = Field(300.0, gt=0, description="seconds a timestamp stays valid")
    max_body_bytes: int = Field(64 * 1024, gt=0)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> WebhookSettings:
        parsed = parse_options(cls, raw, "webhook")
        if parsed.secret is not None and len(parsed.secret.get_secret_value()) < 16:
            raise SettingsError("webhook.secret: must be at least 16 characters")
        _register_secrets(parsed)
        return parsed


def _register_secrets(s: WebhookSettings) -> None:
    for secret in (s.secret, s.alertmanager.bearer_token):
        if secret is not None:
            register_secret(secret.get_secret_value())


class Refused(WatcherError):
    """A webhook request that is not accepted; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def sign(secret: str, body: bytes, timestamp: int | float | str) -> str:
    """The signature header's value for `body` sent at `timestamp`; ValueError when the
    timestamp is no finite number (a sender's mistake, said as such)."""
    value = float(timestamp)
    if not math.isfinite(value):
        raise ValueError(f"timestamp {timestamp!r} is not a finite number")
    mac = hmac.new(secret.encode(), f"{int(value)}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(settings: WebhookSettings, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers that authenticate `body` (for senders and tests)."""
    assert settings.secret is not None
    ts = int(time.time() if now is None else now)
    return {settings.timestamp_header: str(ts),
            settings.signature_header: sign(settings.secret.get_secret_value(), body, ts)}


class Verifier:
    """Checks one request's authentication; remembers accepted signatures for the window."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> expiry

    def check_size(self, length: int) -> None:
        if length > self.settings.max_body_bytes:
            raise Refused(413, f"body of {length} bytes is over the limit of "
                               f"{self.settings.max_body_bytes}")

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Raise Refused unless `body` is signed, fresh and new. `headers` keys lower-case.

        A pure function of its arguments and the signatures remembered so far: the fuzz
        harness calls it directly. The timestamp must be whole unix seconds (what is signed),
        so NaN, infinities, fractions and signs are refused before any arithmetic; a
        signature older than `replay_window` seconds is refused, and one accepted before is
        remembered for as long as its timestamp is inside the window."""
        s = self.settings
        now = time.time() if now is None else now
        self.check_size(len(body))
        if s.secret is None:
            raise Refused(503, "webhook.secret is not configured")
        ts_text = headers.get(s.timestamp_header.lower(), "")
        sig = headers.get(s.signature_header.lower(), "")
        if not ts_text or not sig:
            raise Refused(401, "unsigned request (timestamp or signature header missing)")
        if not _SECONDS.fullmatch(ts_text):
            raise Refused(401, "timestamp header is not whole unix seconds")
        ts = int(ts_text)
        if abs(now - ts) > s.replay_window:
            raise Refused(401, f"timestamp is {now - ts:+.0f}s from now, outside the "
                               f"{s.replay_window:g}s window")
        expected = sign(s.secret.get_secret_value(), body, ts)
        if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
            raise Refused(401, "bad signature")
        self._forget_expired(now)
        if expected in self._seen:
            raise Refused(409, "replayed request (signature already used)")
        self._seen[expected] = ts + s.replay_window
        while len(self._seen) > _MAX_REMEMBERED:
            self._seen.popitem(last=False)

    def verify_bearer(self, headers: Mapping[str, str], token: SecretStr) -> bool:
        """True when `Authorization: Bearer <token>` matches (constant time)."""
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return False
        return hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode())

    def _forget_expired(self, now: float) -> None:
        for key, expiry in list(self._seen.items()):
            if expiry < now:
                del self._seen[key]


def parse_json(body: bytes) -> Any:
    """The body as JSON; Refused(400) for anything else, including nesting too deep to parse."""
    try:
        text = body.decode("utf-8")
        json_depth(text, MAX_DEPTH)  # json's scanner recurses: 64 KiB of '[' was a RecursionError
        return json.loads(text)
    except DocumentError as exc:
        raise Refused(400, f"body is not accepted JSON: {exc.reason}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refused(400, "body is not JSON") from None
    except RecursionError:
        raise Refused(400, "body is nested too deeply") from None


def model_from_payload(payload: Any) -> str:
    """The model named by a `model_updated` payload; Refused(400) when there is none."""
    if not isinstance(payload, dict):
        raise Refused(400, "payload must be a JSON object")
    candidate: Any = payload.get("model", payload.get("model_name", payload.get("name")))
    if isinstance(candidate, dict):
        candidate = candidate.get("name")
    if not isinstance(candidate, str) or not _NAME.fullmatch(candidate):
        raise Refused(400, "payload names no valid model (model, model.name, model_name or name)")
    return candidate


def operator_of(ctx: FeatureContext) -> Operator:
    """The daemon's operator; Refused(503) while the daemon is starting."""
    operator = ctx.operator()
    if operator is None:
        raise Refused(503, "the daemon is starting; try again")
    return operator


class ModelUpdatedHook:
    """`POST /hooks/model-updated` -> `Operator.request_resync(model)`."""

    path = "/hooks/model-updated"

    def __init__(self, ctx: FeatureContext, verifier: Verifier) -> None:
        self.ctx = ctx
        self.verifier = verifier

    async def handle(self, headers: Mapping[str, str], body: bytes, peer: str) -> Reply:
        self.verifier.verify(headers, body)
        payload = parse_json(body)
        event = payload.get("event") if isinstance(payload, dict) else None
        if event is not None and event != "model_updated":
            log.info("webhook: ignored event %r from %s", event, peer)
            return 200, {"status": "ignored", "event": str(event)[:64]}
        model = model_from_payload(payload)
        operator_of(self.ctx).request_resync(model)
        log.info("webhook: model_updated for %s from %s: re-reading its key", model, peer,
                 extra={"model": model})
        return 202, {"status": "accepted", "model": model}
