"""The OTLP/HTTP stage: spans and logs from the real OpenTelemetry SDK exporter, labeled and forwarded."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import auth, build_app

from activelabel.service import ServiceConfig
from activelabel.service.config import OtlpConfig
from activelabel.service.otlp_mapping import attributes_dict
from activelabel.service.testing import OtlpReceiver, serve_in_thread

RESOURCE = Resource.create({"service.name": "shop"})


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def forwarding_url(receiver):
    config = ServiceConfig(otlp=OtlpConfig(forward_endpoint=receiver.endpoint))
    with serve_in_thread(build_app(config=config)) as url:
        yield url


@pytest.fixture(scope="module")
def returning_url():
    with serve_in_thread(build_app()) as url:
        yield url


def _tracer(url: str, token: str = "label-token", compression: Compression = Compression.NoCompression):
    provider = TracerProvider(resource=RESOURCE)
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers=auth(token), compression=compression)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_sdk_spans_are_labeled_and_forwarded(forwarding_url, receiver):
    """Spans exported by the OpenTelemetry SDK reach the next receiver with label.* attributes."""
    provider = _tracer(forwarding_url)
    tracer = provider.get_tracer("checkout")
    with tracer.start_as_current_span("charge", kind=SpanKind.SERVER, attributes={"tenant": "acme"}) as span:
        span.set_status(Status(StatusCode.ERROR, "card declined"))
    with tracer.start_as_current_span("render", attributes={"tenant": "other"}):
        pass
    provider.shutdown()
    spans = receiver.wait_for(lambda r: {s.name: s for s in r.spans()} if len(r.spans()) >= 2 else None)
    charge = attributes_dict(spans["charge"].attributes)
    assert charge["tenant"] == "acme"
    assert charge["label.tier"] == "gold"
    assert charge["label.failed"] is True
    assert charge["label.priority"] == "normal"
    render = attributes_dict(spans["render"].attributes)
    assert "label.tier" not in render and "label.failed" not in render
    resource = attributes_dict(receiver.trace_requests()[0].resource_spans[0].resource.attributes)
    assert resource["service.name"] == "shop"


def test_sdk_gzip_spans_are_accepted(forwarding_url, receiver):
    """A gzip-compressed OTLP export (as Collectors send by default) is labeled like a plain one."""
    provider = _tracer(forwarding_url, compression=Compression.Gzip)
    with provider.get_tracer("t").start_as_current_span("gz", attributes={"tenant": "acme"}):
        pass
    provider.shutdown()
    spans = receiver.wait_for(lambda r: [s for s in r.spans() if s.name == "gz"])
    assert attributes_dict(spans[0].attributes)["label.tier"] == "gold"


def test_sdk_logs_are_labeled_and_forwarded(forwarding_url, receiver):
    """Log records exported by the SDK reach the next receiver labeled from severity and attributes."""
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=forwarding_url + "/v1/logs", headers=auth("label-token")))
    )
    logger = provider.get_logger("shop")
    logger.emit(severity_number=SeverityNumber.ERROR, severity_text="ERROR", body="payment failed", attributes={"tenant": "acme"})
    logger.emit(severity_number=SeverityNumber.WARN, severity_text="WARN", body="slow payment")
    provider.shutdown()
    records = receiver.wait_for(lambda r: r.log_records() if len(r.log_records()) >= 2 else None)
    by_body = {r.body.string_value: attributes_dict(r.attributes) for r in records}
    assert by_body["payment failed"]["label.failed"] is True
    assert by_body["payment failed"]["label.tier"] == "gold"
    assert "label.failed" not in by_body["slow payment"]


OTLP_JSON_TRACES = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "manual"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "charge",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [{"key": "tenant", "value": {"stringValue": "acme"}}],
                            "status": {"code": 2},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_otlp_json_is_labeled_and_returned_without_forward_endpoint(returning_url):
    """OTLP JSON in, with no next hop configured, comes back labeled as OTLP JSON with hex ids kept."""
    r = httpx.post(returning_url + "/v1/traces", content=orjson.dumps(OTLP_JSON_TRACES), headers={**auth("label-token"), "content-type": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    span = r.json()["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["label.tier"] == {"stringValue": "gold"}
    assert attributes["label.failed"] == {"boolValue": True}


def test_otlp_json_logs_are_labeled(returning_url):
    """OTLP JSON log records are labeled from their severity number."""
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": 17, "body": {"stringValue": "boom"}}]}]}]}
    r = httpx.post(returning_url + "/v1/logs", json=logs, headers=auth("label-token"))
    record = r.json()["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert {a["key"]: a["value"] for a in record["attributes"]}["label.failed"] == {"boolValue": True}


@pytest.mark.parametrize(
    ("path", "content", "media", "status", "code"),
    [
        ("/v1/traces", b"\xff\xff\xff\xff", "application/x-protobuf", 400, "bad_protobuf"),
        ("/v1/logs", b"\x0a\x05\x0a", "application/x-protobuf", 400, "bad_protobuf"),
        ("/v1/traces", b"{not json", "application/json", 400, "bad_json"),
        ("/v1/traces", b"[]", "application/json", 400, "bad_otlp"),
        ("/v1/traces", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "application/json", 400, "bad_otlp"),
        ("/v1/traces", b'{"resourceSpans": 3}', "application/json", 400, "bad_otlp"),
        ("/v1/logs", b"{}", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bad_otlp_payloads_get_a_json_4xx(returning_url, path, content, media, status, code):
    """Invalid protobuf, invalid OTLP JSON and wrong content types are refused with a 4xx JSON error."""
    r = httpx.post(returning_url + path, content=content, headers={**auth("label-token"), "content-type": media})
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_otlp_needs_a_label_token(returning_url):
    """An OTLP export without a token is refused with 401, so the SDK exporter reports failure."""
    r = httpx.post(returning_url + "/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 401


def test_unreachable_next_hop_is_a_502():
    """When the next OTLP receiver is down the stage answers 502 so the sender retries, not 200."""
    with OtlpReceiver() as gone:
        dead_endpoint = gone.endpoint
    config = ServiceConfig(otlp=OtlpConfig(forward_endpoint=dead_endpoint, forward_timeout_s=2))
    with serve_in_thread(build_app(config=config)) as url:
        r = httpx.post(url + "/v1/traces", content=orjson.dumps(OTLP_JSON_TRACES), headers={**auth("label-token"), "content-type": "application/json"})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "forward_failed"


def test_secret_labels_reach_otlp_only_with_clearance(returning_url):
    """A secret label is written onto spans only when the exporting token is cleared for secrets."""
    traces = orjson.loads(orjson.dumps(OTLP_JSON_TRACES))
    span = traces["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"].append({"key": "key_owner", "value": {"stringValue": "team-blue"}})
    body = orjson.dumps(traces)

    def labeled_attributes(token: str) -> dict:
        r = httpx.post(returning_url + "/v1/traces", content=body, headers={**auth(token), "content-type": "application/json"})
        out = r.json()["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        return {a["key"]: a["value"] for a in out["attributes"]}

    assert "label.api_key_owner" not in labeled_attributes("label-token")
    assert labeled_attributes("secret-token")["label.api_key_owner"] == {"stringValue": "team-blue"}


def test_otlp_doors_count_labeled_spans_and_records():
    """Each span and log record labeled on the OTLP doors is counted per door, with one latency observation per export."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityNumber": 9}, {"severityNumber": 17}, {}]}]}]}
    with serve_in_thread(build_app(registry=registry)) as url:
        httpx.post(url + "/v1/traces", content=orjson.dumps(OTLP_JSON_TRACES), headers={**auth("label-token"), "content-type": "application/json"})
        httpx.post(url + "/v1/logs", json=logs, headers=auth("label-token"))
    assert registry.get_sample_value("activelabel_service_events_labeled_total", {"door": "otlp_traces"}) == 1
    assert registry.get_sample_value("activelabel_service_events_labeled_total", {"door": "otlp_logs"}) == 3
    assert registry.get_sample_value("activelabel_service_label_latency_seconds_count", {"door": "otlp_logs", "arm": "stable"}) == 1


def test_sender_cannot_pass_off_its_own_label_attributes(returning_url):
    """An incoming label.* attribute for a policy label is replaced or dropped; other attributes are kept."""
    traces = orjson.loads(orjson.dumps(OTLP_JSON_TRACES))
    span = traces["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] += [
        {"key": "label.privileged", "value": {"boolValue": True}},
        {"key": "label.tier", "value": {"stringValue": "bronze"}},
        {"key": "label.other", "value": {"stringValue": "kept"}},
    ]
    r = httpx.post(returning_url + "/v1/traces", content=orjson.dumps(traces), headers={**auth("label-token"), "content-type": "application/json"})
    out = r.json()["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    keys = [a["key"] for a in out]
    attributes = {a["key"]: a["value"] for a in out}
    assert "label.privileged" not in attributes
    assert keys.count("label.tier") == 1 and attributes["label.tier"] == {"stringValue": "gold"}
    assert attributes["label.other"] == {"stringValue": "kept"}
