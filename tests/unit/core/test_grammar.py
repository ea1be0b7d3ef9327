"""Each field's grammar (watcher/core/grammar.py), as tables of accepted and refused values,
and the same values through `parse_document` (one-line reasons that name the field)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from watcher.core import grammar
from watcher.core.errors import DocumentError
from watcher.core.spec import parse_document

GOOD: list[tuple[Callable[[Any], Any], Any]] = [
    (grammar.env_name, "MAX_MODEL_LEN"), (grammar.env_name, "_x1"), (grammar.env_name, "a"),
    (grammar.env_value, ""), (grammar.env_value, "a b\tc=d 'q' \"q\" $HOME ✓"),
    (grammar.argument, "--flag=a\nb"), (grammar.argument, ""),
    (grammar.port, 1), (grammar.port, 65535),
    (grammar.image_reference, "nginx"), (grammar.image_reference, "library/nginx:1.27"),
    (grammar.image_reference, "127.0.0.1:5000/dify/model-server:v1.2.0"),
    (grammar.image_reference, "localhost/a__b/c-d.e_f:tag"),
    (grammar.image_reference, "Registry.Example:5000/x"),
    (grammar.image_reference, "[::1]:5000/x@sha256:" + "a" * 64),
    (grammar.image_reference, "registry.example.com/m/s:v1.2.0-rc.1@sha256:" + "0" * 64),
    (grammar.uri, "file:///srv/models/qwen/v1.2.0"), (grammar.uri, "/srv/models/x"),
    (grammar.uri, "s3://bucket/models/x.safetensors"), (grammar.uri, "hf://org/model@rev"),
    (grammar.uri, "file://localhost/srv/m"), (grammar.uri, "https://h/a..b/c.."),
    (grammar.uri, "x"),  # syntax only: schemes are admission.py's
    (grammar.health_path, "/health"), (grammar.health_path, "/v2/models/m/ready?verbose=1"),
    (grammar.python_path, "mlserver_sklearn.SKLearnModel"),
]

BAD: list[tuple[Callable[[Any], Any], Any, str]] = [
    (grammar.env_name, "", "POSIX"), (grammar.env_name, "A=B", "POSIX"),
    (grammar.env_name, "1A", "POSIX"), (grammar.env_name, "A-B", "POSIX"),
    (grammar.env_name, "Ä", "POSIX"), (grammar.env_name, "A B", "POSIX"),
    (grammar.env_value, "a\x00b", "control"), (grammar.env_value, "a\nb", "control"),
    (grammar.env_value, "a\rb", "control"), (grammar.env_value, "\x1b[31m", "control"),
    (grammar.env_value, "\x85", "control"),
    (grammar.argument, "a\x00b", "NUL"),
    (grammar.port, 0, "1-65535"), (grammar.port, 65536, "1-65535"), (grammar.port, -1, "1-65535"),
    (grammar.port, True, "1-65535"),
    (grammar.image_reference, "nginx latest", "not a valid image"),
    (grammar.image_reference, " nginx", "not a valid image"),
    (grammar.image_reference, "nginx\n", "not a valid image"),
    (grammar.image_reference, "UPPER/case", "lowercase"),
    (grammar.image_reference, "Library/nginx", "lowercase"),
    (grammar.image_reference, "nginx:", "not a valid image"),
    (grammar.image_reference, "nginx:-tag", "not a valid image"),
    (grammar.image_reference, "nginx@sha256:abc", "not a valid image"),
    (grammar.image_reference, "a//b", "not a valid image"),
    (grammar.image_reference, "-a/b", "not a valid image"),
    (grammar.image_reference, "x:" + "t" * 129, "not a valid image"),
    (grammar.image_reference, "a/" * 200 + "b", "longer"),
    (grammar.uri, "", "1-2048"), (grammar.uri, "file:///srv/models/../etc/shadow", "'..'"),
    (grammar.uri, "file:///srv/models/%2e%2e/etc", "'..'"),
    (grammar.uri, "file:///srv/models/%252e%252e/etc", "'..'"),
    (grammar.uri, "/srv/models/..", "'..'"), (grammar.uri, "s3://b/../x", "'..'"),
    (grammar.uri, "file:///srv/m%00x", "encodes a control"),
    (grammar.uri, "file:///srv/m x", "whitespace"), (grammar.uri, "file:///srv/m\n", "whitespace"),
    (grammar.uri, "file://evil.host/srv/m", "names a host"),
    (grammar.uri, "http://[::1/x", "cannot be parsed"),
    (grammar.uri, "x" * 3000, "1-2048"),
    (grammar.health_path, "health", "absolute path"),
    (grammar.health_path, "http://evil/health", "absolute path"),
    (grammar.health_path, "@evil.example/health", "absolute path"),
    (grammar.health_path, "//evil.example/health", "absolute path"),
    (grammar.health_path, "/a/../../admin", "'..'"), (grammar.health_path, "/%2e%2e/x", "'..'"),
    (grammar.health_path, "/health#x", "absolute path"),
    (grammar.health_path, "/he alth", "absolute path"),
    (grammar.python_path, "os.system('x')", "dotted Python name"),
]


@pytest.mark.parametrize(("check", "value"), GOOD)
def test_accepted(check: Callable[[Any], Any], value: Any) -> None:
    assert check(value) == value


@pytest.mark.parametrize(("check", "value", "reason"), BAD)
def test_refused(check: Callable[[Any], Any], value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check(value)


def document(**sections: Any) -> bytes:
    doc: dict[str, Any] = {"name": "m", "version": "v1.0.0", "model": {"uri": "file:///srv/m"}}
    for path, value in sections.items():
        node = doc
        *parents, last = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return yaml.safe_dump(doc).encode()


@pytest.mark.parametrize(("sections", "reason"), [
    ({"runtime__env": {"A=B": "x"}}, "runtime.env.A=B.[key]: 'A=B' is not a POSIX"),
    ({"runtime__env": {"": "x"}}, "is not a POSIX"),
    ({"runtime__env": {"A": "x\x00y"}}, "control character"),
    ({"runtime__env": {"A": "x\ny"}}, "control character"),
    ({"runtime__args": ["--a", "b\x00"]}, "runtime.args[1] contains the control character"),
    ({"runtime__ports": {"http": 0}}, "runtime.ports.http: port 0 is not in 1-65535"),
    ({"runtime__ports": {"http": 70000}}, "1-65535"),
    ({"runtime__ports": {"http": "80"}}, "valid integer"),
    ({"runtime__ports": {"HTTP": 80}}, "port name"),
    ({"runtime__image": "nginx latest"}, "runtime.image: 'nginx latest' is not a valid image"),
    ({"runtime__labels": {"model-watcher.revision": "x"}}, "not under model-watcher."),
    ({"model__uri": "file:///srv/../etc"}, "model.uri: uri 'file:///srv/../etc' has a '..'"),
    ({"model__adapters": [{"name": "a", "uri": "file:///x/%2e%2e/y"}]}, "model.adapters.0.uri"),
    ({"model__implementation": "__import__('os')"}, "dotted Python name"),
    ({"model__parameters": {"t": float("nan")}}, "not finite"),
    ({"model__parameters": {"t": float("inf")}}, "not finite"),
    ({"model__parameters": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
     "deeper than 9"),
    ({"model__parameters": {"stop": list(range(2001))}}, "more than 2000"),
    ({"metadata__metrics": {"acc": "nan"}}, "metadata.metrics.acc: Input should be a finite number"),
    ({"metadata__metrics": {"acc": "-infinity"}}, "finite number"),
    ({"metadata__model_id": "a\nb"}, "control character"),
    ({"health__latency_ms": "inf"}, "health.latency_ms: Input should be a finite number"),
    ({"health__url": "http://169.254.169.254/latest/meta-data"}, "health.url: a document cannot choose"),
    ({"health__path": "@evil.example/x"}, "health.path"),
    ({"version": "v1.0.0-" + "a" * 200}, "version"),
])
def test_documents_with_wrong_values_are_rejected_naming_the_field(sections: dict[str, Any],
                                                                   reason: str) -> None:
    with pytest.raises(DocumentError, match=re.escape(reason)) as err:
        parse_document(document(**sections))
    assert "\n" not in err.value.reason
