"""OpenTelemetry ``SpanProcessor`` that labels spans in-process when they end.

An ended span is read-only, so the processor wraps the processor that exports
(typically a ``BatchSpanProcessor``) and hands it a copy carrying the labels as
attributes ``<prefix><label>``::

    provider = TracerProvider()
    provider.add_span_processor(
        LabelingSpanProcessor(labeler, BatchSpanProcessor(OTLPSpanExporter()))
    )

Rules see the same event as on the OTLP door (see ``otlp_mapping``). Labels
above ``clearances`` are written as their ``protect:`` treatment (``pii``) or not at all (``secret``).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

from activelabel.observability.metrics import LabelTimer, ServiceMetrics
from activelabel.service.auth import Caller
from activelabel.service.label_output import visible_labels
from activelabel.service.otlp_mapping import span_event
from activelabel.service.policy_runtime import snapshot_source

log = logging.getLogger("activelabel.service.span_processor")


def event_of_span(span: ReadableSpan) -> dict[str, Any]:
    """The event a rule sees for an SDK span (same shape as an OTLP span)."""
    scope = span.instrumentation_scope
    context = span.context
    return span_event(
        name=span.name,
        kind=span.kind.name,
        status_code=span.status.status_code.name,
        status_message=span.status.description or "",
        attributes=dict(span.attributes or {}),
        resource=dict(span.resource.attributes) if span.resource is not None else {},
        scope={"name": scope.name, "version": scope.version or ""} if scope is not None else {},
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        trace_id=format_trace_id(context.trace_id) if context is not None else "",
        span_id=format_span_id(context.span_id) if context is not None else "",
    )


class LabelingSpanProcessor(SpanProcessor):
    """Labels each ended span and passes a labeled copy to ``next_processor``.

    ``labeler`` is a ``Labeler`` or a ``PolicyRuntime`` (whose current policy is used).
    """

    def __init__(
        self,
        labeler: Any,
        next_processor: SpanProcessor,
        *,
        attribute_prefix: str = "label.",
        clearances: frozenset[str] = frozenset(),
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.next_processor = next_processor
        self.attribute_prefix = attribute_prefix
        self.metrics = metrics
        self._caller = Caller(name="span-processor", clearances=frozenset(clearances))
        self._snapshot = snapshot_source(labeler)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.next_processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        timer = LabelTimer()
        snapshot = self._snapshot()
        try:
            decision = snapshot.labeler.label(event_of_span(span))
            labels = visible_labels(decision.labels, snapshot, self._caller)
        except Exception as exc:  # noqa: BLE001 - a labeling bug must not lose the span
            log.error("span labeling failed: %s", type(exc).__name__)
            if self.metrics is not None:
                self.metrics.observe_error("span_processor", "internal", failed_events=1)
            self.next_processor.on_end(span)
            return
        if self.metrics is not None:
            self.metrics.observe_labeled("span_processor", timer.seconds(), 1, cpu_seconds=timer.cpu_seconds())
            self.metrics.observe_decisions(snapshot, (decision.labels,))
        if not labels:
            self.next_processor.on_end(span)
            return
        attributes = dict(span.attributes or {})
        attributes.update((self.attribute_prefix + name, _attribute_value(value)) for name, value in labels.items())
        self.next_processor.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=attributes,
                events=span.events,
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self.next_processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.next_processor.force_flush(timeout_millis)


def _attribute_value(value: Any) -> Any:
    # OTel attributes take str/bool/int/float; anything else is written as text.
    return value if isinstance(value, (str, bool, int, float)) else str(value)
