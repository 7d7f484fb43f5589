"""SDK hooks: the ASGI middleware and the OpenTelemetry SpanProcessor, labeling in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import build_labeler

from activelabel.observability import ServiceMetrics
from activelabel.service import LabelingMiddleware, LabelingSpanProcessor
from activelabel.service.otlp_mapping import attributes_dict
from activelabel.service.testing import OtlpReceiver, serve_in_thread


@pytest.fixture(scope="module")
def labeler():
    return build_labeler()


async def echo_labels(request: Request) -> JSONResponse:
    return JSONResponse({"labels": request.state.labels, "explained": "labels" in request.state.label_decision.explain()})


@pytest.fixture(scope="module")
def app_url(labeler):
    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/{path:path}", echo_labels, methods=["GET", "POST"])])
    app.add_middleware(LabelingMiddleware, labeler=labeler, response_headers=True, metrics=ServiceMetrics(registry))
    with serve_in_thread(app) as url:
        yield url, registry


def test_middleware_gives_the_handler_the_labels(app_url):
    """A handler behind the middleware reads the request's labels (all of them) from request.state."""
    url, _ = app_url
    r = httpx.post(url + "/pay/now", headers={"x-tenant": "acme", "x-user-email": "ann@example.com"})
    labels = r.json()["labels"]
    assert labels["priority"] == "high"
    assert labels["tier"] == "gold"
    assert labels["customer_email"] == "ann@example.com"
    assert r.json()["explained"] is True


def test_middleware_response_headers_leave_out_sensitive_labels(app_url):
    """Labels go back as x-label-* response headers, but pii and secret labels never do."""
    url, _ = app_url
    r = httpx.get(url + "/pay", headers={"x-user-email": "ann@example.com"})
    assert r.headers["x-label-priority"] == "high"
    assert "x-label-customer-email" not in r.headers
    assert "ann@example.com" not in str(r.headers)


def test_middleware_counts_into_injected_metrics(app_url):
    """With metrics injected, each labeled request is observed on the middleware front door."""
    url, registry = app_url
    before = registry.get_sample_value("activelabel_service_events_labeled_total", {"door": "middleware"})
    httpx.get(url + "/")
    assert registry.get_sample_value("activelabel_service_events_labeled_total", {"door": "middleware"}) == before + 1


def _provider(labeler, exporter, **kwargs) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(LabelingSpanProcessor(labeler, SimpleSpanProcessor(exporter), **kwargs))
    return provider


def test_span_processor_labels_spans_on_end(labeler):
    """Ended spans reach the exporter with label.* attributes set from the span's name, status and attributes."""
    exporter = InMemorySpanExporter()
    provider = _provider(labeler, exporter)
    with provider.get_tracer("t").start_as_current_span("charge", attributes={"tenant": "acme", "key_owner": "blue"}) as span:
        span.set_status(Status(StatusCode.ERROR))
    (finished,) = exporter.get_finished_spans()
    assert finished.attributes["label.tier"] == "gold"
    assert finished.attributes["label.failed"] is True
    assert finished.attributes["tenant"] == "acme"
    assert "label.api_key_owner" not in finished.attributes


def test_span_processor_writes_secret_labels_only_when_cleared(labeler):
    """A span processor given the secret clearance writes secret labels too."""
    exporter = InMemorySpanExporter()
    provider = _provider(labeler, exporter, clearances=frozenset({"secret"}), attribute_prefix="al.")
    with provider.get_tracer("t").start_as_current_span("charge", attributes={"key_owner": "blue"}):
        pass
    assert exporter.get_finished_spans()[0].attributes["al.api_key_owner"] == "blue"


def test_span_processor_feeds_a_real_otlp_exporter(labeler):
    """Labeled spans exported over real OTLP/HTTP arrive at a receiver with their labels."""
    with OtlpReceiver() as receiver:
        provider = _provider(labeler, OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces"))
        with provider.get_tracer("t").start_as_current_span("render", attributes={"tenant": "acme"}):
            pass
        provider.shutdown()
        (span,) = receiver.wait_for(lambda r: r.spans())
    assert attributes_dict(span.attributes)["label.tier"] == "gold"


def test_sdk_hooks_follow_a_policy_runtime_across_reloads(tmp_path):
    """Given a PolicyRuntime instead of a Labeler, the middleware and the span processor use the policy after reload()."""
    import shutil

    from activelabel.service import PolicyRuntime

    policy = tmp_path / "policy.yaml"
    shutil.copy(Path(__file__).parent / "fixtures" / "service" / "policy.yaml", policy)
    runtime = PolicyRuntime.load(policy)
    app = Starlette(routes=[Route("/{path:path}", echo_labels, methods=["GET"])])
    app.add_middleware(LabelingMiddleware, labeler=runtime, response_headers=True)
    exporter = InMemorySpanExporter()
    provider = _provider(runtime, exporter)
    with serve_in_thread(app) as url:
        assert httpx.get(url + "/pay").headers["x-label-priority"] == "high"
        policy.write_text(policy.read_text().replace("    value: high\n    when: event.path.startsWith", "    value: low\n    when: event.path.startsWith"))
        assert runtime.reload().accepted
        assert httpx.get(url + "/pay").headers["x-label-priority"] == "low"
    with provider.get_tracer("t").start_as_current_span("s", attributes={"tenant": "acme"}):
        pass
    assert exporter.get_finished_spans()[0].attributes["label.tier"] == "gold"


def test_policy_runtime_load_refuses_a_bad_policy():
    """PolicyRuntime.load on an invalid policy raises PolicyError with every issue."""
    from activelabel.errors import PolicyError
    from activelabel.service import PolicyRuntime

    with pytest.raises(PolicyError) as info:
        PolicyRuntime.load(Path(__file__).parent / "fixtures" / "service" / "bad_policy.yaml")
    assert len(info.value.issues) == 3
