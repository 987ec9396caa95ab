"""OpenTelemetry spans per stage, each in its task's own trace.

Records carry a ``trace_id`` (the client's, or one the perceive stage derives from the task id), not
a span context: there is no field for a parent span. So every stage's span is made the child of one
remote parent derived from the trace id alone (a virtual "task" span that is never exported): the
spans of one task, from every stage and every worker, share one W3C trace and sit side by side
under it, each with its stage's start and end.

Spans are recorded after the fact (:meth:`StageTracer.span` with a start and an end), so the batched
stages pay nothing per event for context managers, and with no exporter configured
(``tracing.exporter = none``, the default) :attr:`StageTracer.enabled` is false, nothing is created
and OpenTelemetry is not even imported.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aos_gateway.errors import MissingExtraError
from aos_gateway.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("aos_gateway.tracing")

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_ZERO = "0" * 32


def w3c_trace_id(trace_id: str | None, task_id: str = "") -> str:
    """A valid W3C trace id (32 lower-case hex digits, not all zero) for a record's trace id.

    A trace id that already is one is used as it is; any other string is hashed; no trace id at all
    hashes the task id (so every stage derives the same one for the same task).
    """
    if trace_id:
        low = trace_id.lower()
        if _HEX32.match(low) and low != _ZERO:
            return low
    seed = trace_id or task_id
    digest = hashlib.sha256(b"aos-trace:" + seed.encode("utf-8", "replace")).hexdigest()[:32]
    return digest if digest != _ZERO else "1" + digest[1:]


def trace_id_for(trace_id: str | None, task_id: str) -> str:
    """The trace id a stage's output carries: the input's own, or one derived from the task id."""
    return trace_id or w3c_trace_id(None, task_id)


def sampled(trace_hex: str, ratio: float) -> bool:
    """The same decision in every stage and worker for a trace (OpenTelemetry's TraceIdRatioBased rule)."""
    return ratio >= 1.0 or int(trace_hex[16:], 16) < int(ratio * (1 << 64))


class StageTracer:
    """Records one span per event and stage; a no-op when ``enabled`` is false."""

    def __init__(
        self, exporter: SpanExporter | None = None, *, settings: TracingSettings | None = None, batch: bool = True
    ) -> None:
        s = settings or TracingSettings()
        self.enabled = exporter is not None
        self.ratio = s.sample_ratio
        self._tracer: Any = None
        self._provider: Any = None
        if exporter is None:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        # a provider of our own (not the global one): tests and several apps in one process do not clash
        self._provider = TracerProvider(resource=Resource.create({"service.name": s.service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("aos_gateway.streams")
        self._otel: Any = (trace.set_span_in_context, NonRecordingSpan, SpanContext, TraceFlags(TraceFlags.SAMPLED))
        self._kind = SpanKind.CONSUMER
        self._error = (Status, StatusCode.ERROR)

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> StageTracer:
        """The exporter the settings name (none: a disabled tracer)."""
        if settings.exporter == "none":
            return cls(None, settings=settings)
        return cls(make_exporter(settings), settings=settings)

    def span(
        self,
        stage: str,
        trace_id: str | None,
        task_id: str,
        start_ns: int,
        end_ns: int,
        error: BaseException | str | None = None,
        attributes: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """A finished span of ``stage`` for one task (times: epoch nanoseconds)."""
        if not self.enabled:
            return
        hex_id = w3c_trace_id(trace_id, task_id)
        if not sampled(hex_id, self.ratio):
            return
        in_context, non_recording, span_context, sampled_flag = self._otel
        parent = span_context(
            trace_id=int(hex_id, 16),
            span_id=int(hex_id[:16], 16) ^ int(hex_id[16:], 16) or 1,  # the virtual task span
            is_remote=True,
            trace_flags=sampled_flag,
        )
        attrs: dict[str, str | int | float | bool] = {"aos.stage": stage, "aos.task_id": task_id}
        if trace_id:
            attrs["aos.trace_id"] = trace_id
        if attributes:
            attrs.update(attributes)
        span = self._tracer.start_span(
            stage,
            context=in_context(non_recording(parent)),
            kind=self._kind,
            attributes=attrs,
            start_time=start_ns,
        )
        if error is not None:
            if isinstance(error, BaseException):
                span.record_exception(error)
                error = f"{type(error).__name__}: {error}"
            status, code = self._error
            span.set_status(status(code, error[:500]))
        span.end(end_time=max(end_ns, start_ns))

    def shutdown(self) -> None:
        """Export what is buffered and stop (the provider also does this at exit)."""
        if self._provider is not None:
            self._provider.shutdown()


def make_exporter(settings: TracingSettings) -> SpanExporter:
    """The span exporter ``settings.exporter`` names (console, or OTLP from the ``otel`` extra)."""
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=settings.service_name)
    kw: dict[str, Any] = {}
    if settings.otlp_endpoint:
        kw["endpoint"] = settings.otlp_endpoint
    exporter: SpanExporter
    try:
        if settings.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporter = GrpcExporter(**kw)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporter = HttpExporter(**kw)
    except ImportError:
        raise MissingExtraError("opentelemetry-exporter-otlp", "otel") from None
    return exporter
