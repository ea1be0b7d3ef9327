"""Webhook authentication as pure functions: headers + body + now -> accepted or Refused."""

from __future__ import annotations

import pytest

from watcher.api.webhook import (
    Refused,
    Verifier,
    WebhookSettings,
    model_from_payload,
    parse_json,
    sign,
    signed_headers,
)
from watcher.core.errors import SettingsError

SECRET = "unit-webhook-secret-0123456789"


def test_settings_validation() -> None:
    with pytest.raises(SettingsError, match=r"webhook\.max_body_bytes"):
        WebhookSettings.parse({"max_body_bytes": 0})
    with pytest.raises(SettingsError, match=r"webhook\.bogus"):
        WebhookSettings.parse({"bogus": 1})
    with pytest.raises(SettingsError, match="at least 16"):
        WebhookSettings.parse({"secret": "short"})
    s = WebhookSettings.parse({"secret": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_verifier() -> None:
    s = WebhookSettings.parse({"secret": SECRET, "replay_window": 60, "max_body_bytes": 100})
    v = Verifier(s)
    body = b'{"model": "m"}'
    now = 1_000_000.0
    h = {k.lower(): val for k, val in signed_headers(s, body, now).items()}
    v.verify(h, body, now + 5)
    with pytest.raises(Refused) as e:
        v.verify(h, body, now + 6)
    assert e.value.status == 409
    for headers, payload, at, status in [
        ({}, body, now, 401),
        ({**h, "x-model-watcher-signature": sign("x" * 20, body, now)}, body, now, 401),
        (h, body + b" ", now, 401),
        (h, body, now + 61, 401),
        ({**h, "x-model-watcher-timestamp": "yesterday"}, body, now, 401),
        (h, b"x" * 101, now, 413),
    ]:
        with pytest.raises(Refused) as e:
            v.verify(headers, payload, at)
        assert e.value.status == status
    # a replayed signature is forgotten once its window has passed (and then refused as stale)
    v._forget_expired(now + 1000)
    assert not v._seen
    assert Verifier(WebhookSettings()).check_size(5) is None
    with pytest.raises(Refused) as e:
        Verifier(WebhookSettings()).verify(h, body, now)
    assert e.value.status == 503


# defects found in review (issue 11); each of the two tests below failed before the fix

HOSTILE_TIMESTAMPS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-5", "1e3", "0x10",
                      "99999999999999999999", " 1000000", "1000000.5", "\u0661\u0662\u0663", ""]


@pytest.mark.parametrize("ts", HOSTILE_TIMESTAMPS)
def test_timestamp_must_be_whole_unix_seconds(ts: str) -> None:
    s = WebhookSettings.parse({"secret": SECRET})
    body = b'{"model": "m"}'
    headers = {"x-model-watcher-timestamp": ts,
               "x-model-watcher-signature": sign(SECRET, body, 1_000_000)}
    with pytest.raises(Refused) as e:
        Verifier(s).verify(headers, body, 1_000_000.0)
    assert e.value.status == 401 and e.value.reason


def test_replay_window_is_exact() -> None:
    s = WebhookSettings.parse({"secret": SECRET, "replay_window": 60})
    body = b'{"model": "m"}'
    t = 1_000_000
    h = {k.lower(): v for k, v in signed_headers(s, body, t).items()}
    Verifier(s).verify(h, body, t + 60)           # exactly replay_window old: accepted
    with pytest.raises(Refused) as e:
        Verifier(s).verify(h, body, t + 60.001)   # older than the window: refused
    assert e.value.status == 401
    with pytest.raises(Refused) as e:
        Verifier(s).verify(h, body, t - 60.001)   # as far in the future: refused
    assert e.value.status == 401
    # a fraction appended to the timestamp does not stretch the window (the signature covers
    # the whole seconds only), nor does it let a captured request through once more
    v = Verifier(s)
    v.verify(h, body, t + 1)
    for what, stretched in [
        ("fraction", {**h, "x-model-watcher-timestamp": f"{t}.9"}),
        ("padded signature", {**h, "x-model-watcher-signature": h["x-model-watcher-signature"] + " "}),
    ]:
        for at in (t + 30, t + 60.5):
            with pytest.raises(Refused):
                v.verify(stretched, body, at)
                pytest.fail(f"a replay with a {what} was accepted {at - t:g} s after signing")



def test_payload_parsing_refuses_instead_of_crashing() -> None:
    """Both failed before: deep nesting raised RecursionError (a crash, no answer), and a
    name with a trailing newline passed the `^…$` pattern (re.match lets `$` match before it)."""
    for body in (b"[" * 70_000, b'{"a":' * 70_000):
        with pytest.raises(Refused) as e:
            parse_json(body)
        assert e.value.status == 400
    for name in ("qwen-chat\n", "Qwen", "../etc", "", "a" * 64):
        with pytest.raises(Refused) as e:
            model_from_payload({"model": name})
        assert e.value.status == 400, name
    assert model_from_payload({"model": {"name": "qwen-chat"}}) == "qwen-chat"
