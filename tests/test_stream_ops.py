"""The stream worker's operations against a real Kafka-protocol broker (Tansu): SLIs, lag, readiness, reload, tap, /ui."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

import test_stream_kafka as broker
from activelabel.observability.windows import LabelDrift
from activelabel.stream import POLICY_VERSION_HEADER, StreamWorker
from activelabel.stream.ops_server import StreamOps
from test_stream_kafka import POLICY, WAIT_S, TopicReader, config, headers_of, produce, wait_for

# The broker fixtures of the stream tests (a Tansu broker for this module, fresh topics per test).
kafka = broker.kafka
topics = broker.topics

# The second policy of the reload test: a human version and a changed rule (4xx is now an error too).
POLICY_V2 = POLICY.replace("metadata: {name: stream}", "metadata: {name: stream, version: '2'}").replace(
    "status >= 500", "status >= 400")
BROKEN_POLICY = POLICY.replace("event.status >= 500", "event.status >= ")


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as editors and ConfigMaps do: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text.lstrip())
    tmp.replace(path)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def start(ops: StreamOps, cfg: Any) -> tuple[StreamWorker, threading.Thread, dict[str, Any]]:
    worker = StreamWorker(ops.runtime.current.labeler, cfg, ops=ops)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(worker.run(handle_signals=False)), daemon=True)
    thread.start()
    return worker, thread, result


def test_each_stream_sli_has_its_value_after_a_known_sequence_of_messages(kafka, topics, write_policy):
    """21 good messages, a bad JSON and a non-object give door="stream" latency, 21 labeled, DLQ by reason, coverage, rule errors, values, drift, CPU and zero lag."""
    names = topics()
    registry = CollectorRegistry()
    ops = StreamOps(config(kafka, names), write_policy(POLICY), registry=registry)
    ops.metrics.drift = LabelDrift(window=10, sample_every=1)  # reference: the first 10 decisions; current: the latest 10
    ops.load()
    good = [{"status": 500, "ms": 5}] * 10 + [{"status": 200, "ms": 50}] * 10
    produce(kafka, names[0], [{"value": orjson.dumps(m)} for m in good]
            + [{"value": b"{not json"}, {"value": b"[1, 2]"}, {"value": orjson.dumps({"ms": 1})}])
    stats = StreamWorker(ops.runtime.current.labeler, config(kafka, names, max_messages=23), ops=ops).run(handle_signals=False)
    assert (stats["labeled"], stats["dead_lettered"]) == (21, 2)

    # M1: one latency observation per committed batch, on the stream door.
    assert value(registry, "activelabel_service_label_latency_seconds_count", door="stream", arm="stable") == stats["batches"]
    # M3: events labeled on the door, and coverage of the serving policy (band needs `ms`: every good one has it).
    assert value(registry, "activelabel_service_events_labeled_total", door="stream") == 21
    assert value(registry, "activelabel_label_coverage_ratio", label="error") == 1.0
    assert value(registry, "activelabel_label_set_total", label="band") == 21
    # M6: dead letters by reason, and the rule that errored on the message without `status`.
    assert value(registry, "activelabel_service_events_dead_lettered_total", door="stream", reason="invalid_json") == 1
    assert value(registry, "activelabel_service_events_dead_lettered_total", door="stream", reason="not_object") == 1
    assert value(registry, "activelabel_rule_errors_total", rule="err") == 1
    assert value(registry, "activelabel_rule_matches_total", rule="err") == 10
    # M4: decisions per value of the bounded labels.
    assert value(registry, "activelabel_label_values_total", label="error", value="true") == 10
    assert value(registry, "activelabel_label_values_total", label="error", value="false") == 11
    assert value(registry, "activelabel_label_values_total", label="band", value=">=10") == 10
    # M7: the first 10 decisions (error=true) against the latest 10 (error=false): all the distribution moved.
    assert value(registry, "activelabel_label_drift_js_distance", label="error") > 0.5
    # M10: CPU spent labeling on the stream door.
    assert value(registry, "activelabel_service_label_cpu_seconds_total", door="stream") > 0
    # Everything consumed was committed: nothing behind.
    assert value(registry, "activelabel_stream_consumer_lag", topic=names[0], partition="0") == 0


def test_consumer_lag_counts_messages_not_yet_committed_per_partition(kafka, topics, write_policy):
    """A worker that stops after 4 of 15 messages (10 on partition 0, 5 on partition 1) reports 11 behind, per partition."""
    names = topics(2)
    registry = CollectorRegistry()
    ops = StreamOps(config(kafka, names), write_policy(POLICY), registry=registry)
    ops.load()
    # One message per produce call: Tansu's high watermark trails multi-record batches.
    for i in range(15):
        produce(kafka, names[0], [{"value": orjson.dumps({"status": 200, "i": i}), "partition": 0 if i < 10 else 1}])
    cfg = config(kafka, names, max_messages=4, batch_size=1)
    stats = StreamWorker(ops.runtime.current.labeler, cfg, ops=ops).run(handle_signals=False)
    assert stats["messages_in"] == 4
    lag = {p: value(registry, "activelabel_stream_consumer_lag", topic=names[0], partition=str(p)) for p in (0, 1)}
    # Which partition the 4 came from depends on the fetch order: the sum is exact, each partition bounded by its count.
    assert lag[0] is not None and lag[1] is not None, lag
    assert lag[0] + lag[1] == 11 and 0 <= lag[0] <= 10 and 0 <= lag[1] <= 5, lag


def test_readyz_waits_for_the_policy_and_the_broker_then_metrics_tap_and_ui_answer(kafka, topics, write_policy):
    """/readyz is 503 before the policy loads and before the broker answered, 200 while labeling; /metrics, /v1/tap and /ui serve the same worker."""
    names = topics()
    ops = StreamOps(config(kafka, names, poll_timeout_s=0.1), write_policy(POLICY), lag_interval_s=0.2)
    server = ops.serve(0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(url + "/healthz").status_code == 200
        first = httpx.get(url + "/readyz")
        assert (first.status_code, first.json()["reason"]) == (503, "no policy loaded")
        ops.load()
        second = httpx.get(url + "/readyz")
        assert second.status_code == 503 and "broker" in second.json()["reason"]
        worker, thread, _ = start(ops, ops.config)
        wait_for(lambda: httpx.get(url + "/readyz").status_code == 200, "the worker to be ready")

        tapped: list[dict[str, Any]] = []

        def tap() -> None:
            with httpx.stream("GET", url + "/v1/tap", params={"rule": "err", "limit": 1}, timeout=WAIT_S) as r:
                tapped.extend(orjson.loads(line) for line in r.iter_lines() if line)

        reader = threading.Thread(target=tap, daemon=True)
        reader.start()
        wait_for(lambda: ops.tap.tapped, "the tap reader to attach")
        produce(kafka, names[0], [{"value": orjson.dumps({"status": 200, "ms": 1})}, {"value": orjson.dumps({"status": 503, "ms": 20})}])
        reader.join(WAIT_S)
        decisions = [t for t in tapped if "notice" not in t]
        assert len(decisions) == 1  # the filter kept only the decision where rule `err` matched
        assert decisions[0]["door"] == "stream" and decisions[0]["labels"] == {"error": True, "band": ">=10"}
        assert decisions[0]["path"]["error"]["source"] == "rule:err"

        wait_for(lambda: f'activelabel_stream_consumer_lag{{partition="0",topic="{names[0]}"}} 0.0' in httpx.get(url + "/metrics").text,
                 "the lag of partition 0 to be exported")
        page = httpx.get(url + "/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "stream worker" in page.text and "rule:err" in page.text and names[0] in page.text
        worker.stop()
        thread.join(WAIT_S)
        assert httpx.get(url + "/readyz").status_code == 503  # stopped: no longer consuming
    finally:
        server.close()


def test_a_good_reload_takes_effect_between_two_messages_and_a_bad_one_is_refused(kafka, topics, write_policy):
    """An edited policy file (watched) labels the next message with the new version; a broken one sent by SIGHUP is refused and the worker keeps labeling with the good one."""
    names = topics()
    registry = CollectorRegistry()
    path = write_policy(POLICY)
    ops = StreamOps(config(kafka, names, poll_timeout_s=0.1), path, registry=registry)
    ops.load()
    v1 = ops.runtime.current.version
    restore = ops.install_sighup()
    ops.start_watch()
    reader = TopicReader(kafka, names[1])
    worker, thread, result = start(ops, ops.config)
    try:
        produce(kafka, names[0], [{"value": orjson.dumps({"status": 404, "ms": 1})}])
        wait_for(lambda: reader.drain() >= 1, "the first labeled message")

        replace_file(path, POLICY_V2)
        written = [time.monotonic()]

        def edited() -> bool:
            done = (value(registry, "activelabel_policy_reloads_total", outcome="accepted", trigger="watch") or 0) >= 1
            if not done and time.monotonic() - written[0] > 5:
                # Only if the watch thread was not watching yet when the file was replaced (it starts with the worker).
                replace_file(path, POLICY_V2)
                written[0] = time.monotonic()
            return done

        wait_for(edited, "the watched edit to be reloaded")
        v2 = ops.runtime.current.version
        produce(kafka, names[0], [{"value": orjson.dumps({"status": 404, "ms": 1})}])
        wait_for(lambda: reader.drain() >= 2, "the second labeled message")

        replace_file(path, BROKEN_POLICY)
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: value(registry, "activelabel_policy_reloads_total", outcome="refused", trigger="sighup") == 1,
                 "the broken policy to be refused")
        assert value(registry, "activelabel_policy_last_reload_accepted") == 0
        produce(kafka, names[0], [{"value": orjson.dumps({"status": 404, "ms": 1})}])
        wait_for(lambda: reader.drain() >= 3, "the third labeled message")
    finally:
        worker.stop()
        thread.join(WAIT_S)
        ops.close()
        if restore is not None:
            restore()
        reader.close()
    first, second, third = (orjson.loads(m.value()) for m in reader.messages)
    versions = [headers_of(m)[POLICY_VERSION_HEADER].decode() for m in reader.messages]
    assert v1 != v2 and versions == [v1, v2, v2]
    assert first["labels"]["error"] is False  # 404 is not >= 500
    assert second["labels"]["error"] is True and third["labels"]["error"] is True  # v2: >= 400, still serving
    assert result["messages_in"] == 3 and result["dead_lettered"] == 0
    # M3 across the reload: the coverage denominator counts the serving policy's events only, the counter all of them.
    assert value(registry, "activelabel_labeler_serving_events") == 2
    assert value(registry, "activelabel_labeler_events_total") == 3
    assert value(registry, "activelabel_policy_reloads_total", outcome="refused", trigger="sighup") == 1


def test_cli_stream_exposes_the_ops_port_and_reloads_on_sighup(kafka, topics, write_policy, tmp_path):
    """`activelabel stream --metrics-port` serves /metrics for the stream door and a SIGHUP reload is counted there."""
    import subprocess
    import sys

    names = topics()
    path = write_policy(POLICY)
    port = broker._free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "activelabel", "stream", "--policy", str(path), "--bootstrap", kafka,
         "--input-topic", names[0], "--output-topic", names[1], "--dlq-topic", names[2], "--group", f"g-{names[0]}",
         "--session-timeout-ms", "3000", "--poll-timeout", "0.2", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the CLI worker's /readyz to answer 200")
        produce(kafka, names[0], [{"value": orjson.dumps({"status": 500, "ms": 3})}, {"value": b"nope"}])
        wait_for(lambda: 'activelabel_service_events_dead_lettered_total{door="stream",reason="invalid_json"} 1.0'
                 in httpx.get(url + "/metrics").text, "the dead letter to be counted")
        replace_file(path, POLICY_V2)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'activelabel_policy_reloads_total{outcome="accepted",trigger="sighup"} 1.0'
                 in httpx.get(url + "/metrics").text, "the SIGHUP reload to be counted")
        text = httpx.get(url + "/metrics").text
        assert 'activelabel_service_events_labeled_total{door="stream"} 1.0' in text
        assert 'activelabel_policy_info{name="stream"' in text
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err.decode()
    assert "2 messages in = 1 labeled + 1 dead-lettered" in err.decode()


@pytest.fixture(autouse=True)
def _no_leftover_sighup():
    """Each test starts and ends with the default SIGHUP handler (a reload test installs its own)."""
    before = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, before)
