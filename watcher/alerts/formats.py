"""Payload formats of the notifiers: generic JSON webhook, Slack, DingTalk, Feishu/Lark, WeCom.

Each format is `build(notification, settings, now) -> (url, headers, json_body)` plus `check`
of the answer, because the chat robots answer HTTP 200 with an error code in the body:

    webhook   {"source": "model-watcher", "rule", "status", "subject", ...}; signed with the
              webhook HMAC scheme (X-Model-Watcher-Timestamp/-Signature) when `secret` is set
    slack     incoming webhook {"text": ...}; answer "ok"
    dingtalk  {"msgtype": "markdown", "markdown": {"title", "text"}}; with `secret` the URL
              gets &timestamp=<ms>&sign=<urlencoded base64 HMAC-SHA256 of "ts\\nsecret">;
              answer {"errcode": 0}
    feishu    (alias lark) {"msg_type": "text", "content": {"text"}}; with `secret` the body
              gets timestamp and sign = base64 HMAC-SHA256 keyed by "ts\\nsecret" over "";
              answer {"code": 0} (older robots: {"StatusCode": 0})
    wecom     {"msgtype": "markdown", "markdown": {"content"}}; answer {"errcode": 0}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from watcher.alerts.rules import Notification
from watcher.api.webhook import sign

Kind = Literal["webhook", "slack", "dingtalk", "feishu", "lark", "wecom"]
Built = tuple[str, dict[str, str], dict[str, Any]]


class NotifierSettings(BaseModel):
    """`[alerts.notifiers.NAME]`. The URL of a chat robot carries its token: it is a secret."""

    model_config = ConfigDict(extra="forbid")
    kind: Kind
    url: SecretStr
    secret: SecretStr | None = None
    timeout: float = Field(5.0, gt=0)
    #: delivery attempts before the message is given up (logged and counted)
    attempts: int = Field(6, ge=1)
    backoff: float = Field(1.0, gt=0, description="first retry delay; doubles up to backoff_max")
    backoff_max: float = Field(60.0, gt=0)
    queue_size: int = Field(100, ge=1)


def _hmac_b64(key: bytes, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def _emoji(n: Notification) -> str:
    return "\u2705" if n.status == "resolved" else "\U0001f6a8"


def build_webhook(n: Notification, s: NotifierSettings, now: float) -> Built:
    body = {"source": "model-watcher", "host": socket.gethostname(), "rule": n.rule,
            "condition": n.condition, "status": n.status, "subject": n.subject,
            "model": n.model, "title": n.title, "text": n.text, "count": n.count,
            "started_at": n.started_at, "at": n.at}
    headers: dict[str, str] = {}
    if s.secret is not None:
        raw = _encode(body)
        headers = {"X-Model-Watcher-Timestamp": str(int(now)),
                   "X-Model-Watcher-Signature": sign(s.secret.get_secret_value(), raw, now)}
    return s.url.get_secret_value(), headers, body


def build_slack(n: Notification, s: NotifierSettings, now: float) -> Built:
    return s.url.get_secret_value(), {}, {"text": f"{_emoji(n)} *{n.title}*\n{n.text}"}


def build_dingtalk(n: Notification, s: NotifierSettings, now: float) -> Built:
    url = s.url.get_secret_value()
    if s.secret is not None:
        ts = str(int(now * 1000))
        secret = s.secret.get_secret_value()
        signature = urllib.parse.quote_plus(_hmac_b64(secret.encode(), f"{ts}\n{secret}".encode()))
        url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={signature}"
    body = {"msgtype": "markdown",
            "markdown": {"title": n.title, "text": f"### {_emoji(n)} {n.title}\n\n{n.text}"}}
    return url, {}, body


def build_feishu(n: Notification, s: NotifierSettings, now: float) -> Built:
    body: dict[str, Any] = {"msg_type": "text",
                            "content": {"text": f"{_emoji(n)} {n.title}\n{n.text}"}}
    if s.secret is not None:
        ts = str(int(now))
        body["timestamp"] = ts
        body["sign"] = _hmac_b64(f"{ts}\n{s.secret.get_secret_value()}".encode(), b"")
    return s.url.get_secret_value(), {}, body


def build_wecom(n: Notification, s: NotifierSettings, now: float) -> Built:
    color = "info" if n.status == "resolved" else "warning"
    content = f'<font color="{color}">**{n.title}**</font>\n> {n.text}'
    return s.url.get_secret_value(), {}, {"msgtype": "markdown", "markdown": {"content": content}}


def check_answer(kind: Kind, status: int, text: str) -> str | None:
    """None when the answer means delivered, else why not (never echoing the URL)."""
    if not 200 <= status < 300:
        return f"HTTP {status}"
    if kind in ("webhook", "slack"):
        return None
    try:
        answer = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return "answer is not JSON"
    if not isinstance(answer, dict):
        return "answer is not a JSON object"
    code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
    if code not in (0, "0", None):
        return f"robot answered error {code}: {str(answer.get('errmsg', answer.get('msg', '')))[:100]}"
    return None


BUILDERS: dict[str, Callable[[Notification, NotifierSettings, float], Built]] = {
    "webhook": build_webhook, "slack": build_slack, "dingtalk": build_dingtalk,
    "feishu": build_feishu, "lark": build_feishu, "wecom": build_wecom,
}


def _encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (the webhook signature is over them)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def render(n: Notification, s: NotifierSettings, now: float) -> tuple[str, dict[str, str], bytes]:
    url, headers, body = BUILDERS[s.kind](n, s, now)
    return url, {"Content-Type": "application/json; charset=utf-8", **headers}, _encode(body)
