"""OpenTelemetry from the real daemon: one revision is one trace of named spans, exported over
OTLP/HTTP to a local receiver, and its id is in the audit record and the log lines."""

from __future__ import annotations

import gzip
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.infra.common import wait_until
from tests.integration.ops.conftest import OTLP_TOKEN, OpsEnv, doc, dump

STEPS = {"revision", "validate", "verify", "plan", "apply", "health_gate", "commit"}


def spans(env: OpsEnv) -> list[tuple[str, str, dict[str, str]]]:
    """(trace id, span name, attributes) of everything exported so far."""
    out = []
    for req in env.rx.at("/v1/traces"):
        body = gzip.decompress(req.body) if req.headers.get("content-encoding") == "gzip" \
            else req.body
        export = ExportTraceServiceRequest.FromString(body)
        for rs in export.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    attrs = {a.key: a.value.string_value for a in sp.attributes}
                    out.append((sp.trace_id.hex(), sp.name, attrs))
    return out


def test_one_revision_one_trace(tmp_path: Path) -> None:
    e = OpsEnv(tmp_path)
    try:
        e.daemon.settings["tracing"] = {
            "enabled": True, "endpoint": e.rx.base + "/v1/traces", "schedule_delay": 0.2,
            "headers": {"authorization": f"Bearer {OTLP_TOKEN}"}}
        e.daemon.write_settings()
        rev = e.write(doc())
        e.start()
        e.daemon.wait_applied("demo", rev)

        def root() -> list[tuple[str, str, dict[str, str]]]:
            return [s for s in spans(e) if s[1] == "revision"
                    and s[2].get("model_watcher.revision") == rev]

        wait_until(lambda: root() and {n for t, n, _ in spans(e) if t == root()[0][0]} >= STEPS,
                   15, "the revision's spans at the OTLP receiver")
        assert len(root()) == 1
        trace_id = root()[0][0]
        names = [n for t, n, _ in spans(e) if t == trace_id]
        assert set(names) >= STEPS, names
        assert e.rx.at("/v1/traces")[0].headers["authorization"] == f"Bearer {OTLP_TOKEN}"

        applied = [a for a in e.daemon.audit() if a["action"] == "applied" and a["revision"] == rev]
        assert [a.get("trace_id") for a in applied] == [trace_id], dump(e.daemon.audit())
        lines = [r for r in e.daemon.log_records() if r.get("revision") == rev]
        assert lines and all(r.get("trace_id") == trace_id for r in lines), dump(lines)
    finally:
        e.close()
