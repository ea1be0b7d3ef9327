"""The OTel tracer: one trace per outermost span, named child spans, the trace id exposed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watcher.core.errors import SettingsError
from watcher.fakes.context import feature_context
from watcher.observability import tracing, tracing_otel


async def test_one_trace_per_revision() -> None:
    exporter = InMemorySpanExporter()
    provider = tracing_otel.build_provider(tracing_otel.TracingSettings(enabled=True),
                                           SimpleSpanProcessor(exporter))
    tracer = tracing_otel.OTelTracer(provider)
    assert tracer.trace_id() is None

    async def revision(rev: str) -> str | None:
        with tracer.span("revision", model="m", revision=rev):
            tid = tracer.trace_id()
            for step in ("validate", "verify", "plan", "apply"):
                with tracer.span(step):
                    await asyncio.sleep(0)
                    assert tracer.trace_id() == tid
            return tid

    ids = await asyncio.gather(revision("1"), revision("2"))
    assert len({*ids}) == 2 and all(i and len(i) == 32 for i in ids)
    spans = exporter.get_finished_spans()
    by_trace: dict[str, list[str]] = {}
    for s in spans:
        by_trace.setdefault(f"{s.context.trace_id:032x}", []).append(s.name)
    assert set(by_trace) == set(ids)
    for names in by_trace.values():
        assert sorted(names) == sorted(["revision", "validate", "verify", "plan", "apply"])
    root = next(s for s in spans if s.name == "revision" and s.attributes["model_watcher.revision"] == "1")
    assert root.parent is None and root.resource.attributes["service.name"] == "model-watcher"
    provider.shutdown()


async def test_serve_installs_and_removes(tmp_path: Path) -> None:
    daemon = feature_context(tmp_path, tracing={"enabled": True})
    task = asyncio.create_task(tracing_otel.serve(daemon))
    await asyncio.sleep(0.05)
    assert isinstance(tracing.get_tracer(), tracing_otel.OTelTracer)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert isinstance(tracing.get_tracer(), tracing.NullTracer)
    await asyncio.wait_for(tracing_otel.serve(feature_context(tmp_path / "off")), 1)
    with pytest.raises(SettingsError, match="tracing"):
        tracing_otel.TracingSettings.parse({"exporter": "zipkin"})
