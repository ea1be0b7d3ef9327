from __future__ import annotations

import pytest

from watcher.core.errors import DocumentError
from watcher.core.spec import Version, json_schema, parse_document

GOOD = b"""
name: qwen-chat
version: v1.2.0
runtime: {image: "127.0.0.1:5000/dify/model-server:v1.2.0", env: {MAX_MODEL_LEN: "8192"}}
model:
  uri: file:///srv/models/qwen-chat/v1.2.0
  parameters: {temperature: 0.7}
metadata: {model_id: qwen-chat-20261128, created_at: "2026-11-28T12:00:00Z", metrics: {accuracy: 0.93}}
"""


def test_good_yaml_and_json_documents_parse() -> None:
    spec = parse_document(GOOD, key="qwen-chat")
    assert spec.runtime.env == {"MAX_MODEL_LEN": "8192"}
    assert spec.metadata.metrics["accuracy"] == 0.93
    again = parse_document(spec.model_dump_json().encode())
    assert again == spec


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"\x00abc", "binary"),
    (b"\xff\xfe name", "not UTF-8"),
    (b"[1, 2]", "got a list"),
    (b"42", "got a scalar"),
    (b"~", "nothing (null)"),
    (b"a: [", "invalid YAML at line"),
    (b'{"a": ', "invalid JSON at line 1"),
    (GOOD.replace(b"version: v1.2.0", b"version: 1.2"), "not semver"),
    (GOOD.replace(b"name: qwen-chat", b"name: Qwen Chat"), "schema: name"),
    (GOOD + b"extra_field: 1\n", "extra_field: Extra inputs are not permitted"),
    (GOOD.replace(b"parameters:", b"paramters:"), "model.paramters"),
])
def test_bad_documents_give_one_line_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(DocumentError) as exc:
        parse_document(raw)
    assert reason in exc.value.reason
    assert "\n" not in exc.value.reason
    assert "https://" not in exc.value.reason  # no pydantic URLs in operator-facing text


def test_size_limit_and_key_mismatch() -> None:
    with pytest.raises(DocumentError, match="over the limit of 10"):
        parse_document(GOOD, max_bytes=10)
    with pytest.raises(DocumentError, match="does not match the document key 'other'"):
        parse_document(GOOD, key="other")


@pytest.mark.parametrize(("text", "channel"), [
    ("v1.2.0", "release"), ("1.2.0", "release"), ("v1.2.1-hotfix", "hotfix"), ("v1.2.1-hotfix.2", "hotfix"),
    ("v1.3.0-dev", "dev"), ("v1.3.0-dev.20261128", "dev"), ("v2.0.0-rc.1", "rc"), ("v1.0.0+build.5", "release"),
])
def test_version_channels(text: str, channel: str) -> None:
    assert Version(text).channel == channel


def test_version_ordering_follows_semver() -> None:
    ordered = ["v1.0.0-dev", "v1.0.0-rc.1", "v1.0.0-rc.2", "v1.0.0", "v1.0.1-hotfix", "v1.0.1", "v1.2.0", "v1.10.0"]
    assert sorted(ordered, key=Version) == ordered
    assert Version("v1.0.0") == Version("1.0.0")


@pytest.mark.parametrize("bad", ["1.2", "v1", "v1.2.3.4", "01.2.3", "latest", ""])
def test_not_semver(bad: str) -> None:
    with pytest.raises(ValueError, match="not semver"):
        Version(bad)


def test_schema_forbids_unknown_fields() -> None:
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "version", "model"}
