"""A real Prometheus scrapes a real `activelabel stream` worker (on a real Tansu broker) with the generated rules: a DLQ spike pages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer

import test_stream_kafka as broker
from test_ops_prometheus import TEST_SLO, _active, _alerts, _process, _query, _scalar, _stop, _wait_for
from test_stream_kafka import POLICY

REPO = Path(__file__).resolve().parents[1]
kafka = broker.kafka  # a Tansu broker for this module
topics = broker.topics


@pytest.fixture
def stack(kafka: str, topics: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`activelabel stream --metrics-port` on fresh topics and `prometheus` scraping it, rules from `activelabel ops rules --slo`."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is not installed (apt-get install prometheus; scripts/test does it)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    (tmp_path / "slo.yaml").write_text(TEST_SLO)
    (tmp_path / "policy.yaml").write_text(POLICY.lstrip())
    subprocess.run([sys.executable, "-m", "activelabel", "ops", "rules", "--slo", str(tmp_path / "slo.yaml"), "-o", str(tmp_path / "rules.yaml")],
                   check=True, env=env, capture_output=True, timeout=120)
    names = topics()
    ops_port, prom_port = broker._free_port(), broker._free_port()
    worker = _process([sys.executable, "-m", "activelabel", "stream", "--policy", str(tmp_path / "policy.yaml"), "--bootstrap", kafka,
                       "--input-topic", names[0], "--output-topic", names[1], "--dlq-topic", names[2], "--group", f"g-{names[0]}",
                       "--session-timeout-ms", "3000", "--poll-timeout", "0.2", "--batch-size", "50",
                       "--metrics-port", str(ops_port), "--metrics-host", "127.0.0.1"], tmp_path / "stream.log", env=env, cwd=tmp_path)
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{tmp_path / 'rules.yaml'}]
scrape_configs:
  - job_name: activelabel
    static_configs: [{{targets: ['127.0.0.1:{ops_port}']}}]
""")
    prom = _process([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
                     f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], tmp_path / "prometheus.log")
    ops_url, prom_url = f"http://127.0.0.1:{ops_port}", f"http://127.0.0.1:{prom_port}"
    try:
        _wait_for("the stream worker to be ready", lambda: httpx.get(ops_url + "/readyz").status_code == 200)
        _wait_for("prometheus to be ready", lambda: httpx.get(prom_url + "/-/ready").status_code == 200)
        yield {"ops": ops_url, "prom": prom_url, "kafka": kafka, "input": names[0], "log": tmp_path / "stream.log"}
    finally:
        _stop(prom)
        _stop(worker)


class Messages:
    """Produces to the input topic in a thread; ``mode`` says what (normal, or half of them not JSON)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.topic = topic
        self.mode = "normal"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.producer.produce(self.topic, orjson.dumps({"status": 200 if i % 3 else 503, "ms": i % 20}))
            if self.mode == "dead_letters":
                self.producer.produce(self.topic, b"{not json")
            self.producer.poll(0)
            i += 1
            self._stop.wait(0.02)
        self.producer.flush(10)

    def __enter__(self) -> Messages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def test_stream_worker_normal_traffic_pages_nobody_and_a_dlq_spike_pages(stack):
    """Normal messages record a zero DLQ ratio and full coverage with no page; half the messages not JSON fire the DLQ page alerts for door="stream"."""
    prom = stack["prom"]
    with Messages(stack["kafka"], stack["input"]) as messages:
        _wait_for("recording rules over 15 s of normal traffic",
                  lambda: (_scalar(prom, "count_over_time(activelabel:dlq:ratio_rate5s[25s])") or 0) >= 18, timeout_s=120)
        for alert in _alerts(prom):
            assert alert["labels"].get("severity") != "page", f"page alert on normal traffic: {alert}"
        assert _scalar(prom, "activelabel:dlq:ratio_rate5s") == 0
        assert _scalar(prom, 'activelabel:label_coverage:ratio_rate5s{label="error"}') == pytest.approx(1.0)
        assert (_scalar(prom, 'activelabel:events_labeled:rate5s{door="stream"}') or 0) > 1
        assert _scalar(prom, f'activelabel_stream_consumer_lag{{topic="{stack["input"]}",partition="0"}}') is not None

        messages.mode = "dead_letters"
        _wait_for("the DLQ page alerts to fire", lambda: _active(prom, "ActivelabelDeadLetterBudgetBurn", state="firing")
                  and _active(prom, "ActivelabelDeadLetterSpike", state="firing"), timeout_s=90)
        _wait_for("the DLQ ratio recording rule to settle at one half",
                  lambda: abs((_scalar(prom, "activelabel:dlq:ratio_rate5s") or 0) - 0.5) < 0.05, timeout_s=60)
        dead = {(r["metric"]["door"], r["metric"]["reason"]) for r in _query(prom, "activelabel:dead_lettered:rate5s > 0")}
        assert dead == {("stream", "invalid_json")}
