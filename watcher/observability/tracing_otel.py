"""OpenTelemetry tracing (extra `model-watcher[otel]`): one trace per revision.

The reconciler opens a `revision` span around each change and a span per step inside it
(validate, verify, plan, apply, health_gate, commit); the outermost span starts the trace,
and `trace_id()` gives its id for log lines and the audit record. Spans go out over
OTLP/HTTP (protobuf) to `endpoint` in batches, and are flushed when the daemon stops.

    [tracing]
    enabled = true
    endpoint = "http://127.0.0.1:4318/v1/traces"
    service_name = "model-watcher"
    headers = {authorization = "Bearer ..."}   # secrets: kept in SecretStr, masked in logs

Without `enabled` `serve()` returns at once and the SDK is never imported, so the extra is
needed only when tracing is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from watcher.core.errors import PluginError
from watcher.observability import tracing
from watcher.observability.logs import register_secret
from watcher.plugins import parse_options

if TYPE_CHECKING:
    from watcher.features import FeatureContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

log = logging.getLogger("watcher.observability.tracing")


class TracingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    endpoint: str | None = Field(None, description="OTLP/HTTP traces URL; none: spans are "
                                                   "kept in-process only")
    service_name: str = "model-watcher"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: float = Field(5.0, gt=0)
    #: seconds between batch exports
    schedule_delay: float = Field(2.0, gt=0)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TracingSettings:
        parsed = parse_options(cls, raw, "tracing")
        for value in parsed.headers.values():
            register_secret(value.get_secret_value())
        return parsed


class OTelTracer:
    """watcher.observability.tracing.Tracer over an OpenTelemetry TracerProvider of the daemon's own."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = provider.get_tracer("model-watcher")

    @contextlib.contextmanager
    def span(self, name: str, **attributes: str) -> Iterator[None]:
        attrs = {f"model_watcher.{k}": str(v) for k, v in attributes.items()}
        with self._tracer.start_as_current_span(name, attributes=attrs):
            yield

    def trace_id(self) -> str | None:
        ctx = self._trace.get_current_span().get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def build_provider(settings: TracingSettings,
                   processor: SpanProcessor | None = None) -> TracerProvider:
    """A provider exporting to `settings.endpoint` (or to `processor`, for tests)."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise PluginError(f"tracing.enabled needs the otel extra ({exc.name} is missing); "
                          "install model-watcher[otel]") from exc
    resource = Resource.create({"service.name": settings.service_name,
                                "host.name": socket.gethostname()})
    provider = TracerProvider(resource=resource)
    if processor is not None:
        provider.add_span_processor(processor)
    elif settings.endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint, timeout=int(max(settings.timeout, 1)),
            headers={k: v.get_secret_value() for k, v in settings.headers.items()})
        provider.add_span_processor(BatchSpanProcessor(
            exporter, schedule_delay_millis=settings.schedule_delay * 1000,
            export_timeout_millis=settings.timeout * 1000))
    return provider


async def serve(ctx: FeatureContext) -> None:
    """Install the OTel tracer while the daemon runs; flush and uninstall it on the way out."""
    settings = TracingSettings.parse(ctx.settings.tracing)
    if not settings.enabled:
        return
    provider = build_provider(settings)
    tracing.set_tracer(OTelTracer(provider))
    log.info("tracing: OpenTelemetry on, exporting to %s",
             "OTLP/HTTP" if settings.endpoint else "nowhere (no endpoint)")
    try:
        await asyncio.Event().wait()
    finally:
        tracing.set_tracer(tracing.NullTracer())
        # flush what is batched; bounded by the exporter's timeout
        await asyncio.shield(asyncio.to_thread(provider.shutdown))
