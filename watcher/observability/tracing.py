"""Tracing seam: one trace per revision, one span per step.

The default tracer records nothing and costs nothing; `set_tracer()` installs another (the
optional OpenTelemetry one, extra `model-watcher[otel]`). The reconciler only calls `span()`
and `trace_id()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Tracer(Protocol):
    def span(self, name: str, **attributes: str) -> contextlib.AbstractContextManager[None]:
        """A span named `name`; the outermost span of a revision starts its trace."""
        ...

    def trace_id(self) -> str | None:
        """The current trace's id (hex), for log lines and the audit record."""
        ...


class NullTracer:
    @contextlib.contextmanager
    def span(self, name: str, **attributes: str) -> Iterator[None]:
        yield

    def trace_id(self) -> str | None:
        return None


_tracer: Tracer = NullTracer()


def get_tracer() -> Tracer:
    return _tracer


def set_tracer(tracer: Tracer) -> None:
    global _tracer
    _tracer = tracer
