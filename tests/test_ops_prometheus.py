"""A real Prometheus (Debian's package) scrapes a real `activelabel serve` with the generated rules: page alerts fire on faults only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "tests" / "fixtures" / "service" / "policy.yaml"

# Short windows so the test runs in under a minute; production defaults are Sloth's 5m/1h ... 6h/3d.
TEST_SLO = """
rate_window: 5s
feedback_window: 30s
min_events_per_second: 1
latency: {objective: 0.99, threshold_seconds: 0.0025}
burn_windows:
  - {severity: page, short: 3s, long: 8s, factor: 14.4}
  - {severity: page, short: 5s, long: 15s, factor: 6}
  - {severity: ticket, short: 10s, long: 30s, factor: 3}
  - {severity: ticket, short: 20s, long: 60s, factor: 1}
thresholds: {page_for: 2s, spike_for: 2s, ticket_for: 10m, down_for: 3s, dlq_spike_ratio: 0.05}
"""

PAGE_ALERTS = ("ActivelabelLatencyBudgetBurn", "ActivelabelDeadLetterBudgetBurn", "ActivelabelDeadLetterSpike",
               "ActivelabelDown", "ActivelabelPIILeak")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, condition: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _process(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, **kwargs)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`activelabel serve` and `prometheus` on loopback; rules written by `activelabel ops rules --slo`."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian's prometheus package is not installed (apt-get install prometheus; scripts/test does it)"
    tmp = tmp_path_factory.mktemp("prom")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    (tmp / "slo.yaml").write_text(TEST_SLO)
    subprocess.run([sys.executable, "-m", "activelabel", "ops", "rules", "--slo", str(tmp / "slo.yaml"), "-o", str(tmp / "rules.yaml")],
                   check=True, env=env, capture_output=True, timeout=120)
    serve_port, prom_port = _free_port(), _free_port()
    serve = _process([sys.executable, "-m", "activelabel", "serve", "--policy", str(POLICY), "--port", str(serve_port),
                      "--no-auth", "--log-level", "warning"], tmp / "serve.log", env=env, cwd=tmp)
    (tmp / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{tmp / 'rules.yaml'}]
scrape_configs:
  - job_name: activelabel
    static_configs: [{{targets: ['127.0.0.1:{serve_port}']}}]
""")
    prom = _process([prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                     f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], tmp / "prometheus.log")
    serve_url, prom_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{prom_port}"
    try:
        _wait_for("serve to be ready", lambda: httpx.get(serve_url + "/readyz").status_code == 200)
        _wait_for("prometheus to be ready", lambda: httpx.get(prom_url + "/-/ready").status_code == 200)
        yield {"serve": serve_url, "prom": prom_url, "tmp": tmp, "serve_process": serve}
    finally:
        _stop(prom)
        _stop(serve)


class Traffic:
    """Sends requests to /v1/label in a thread; ``mode`` says what kind (normal, dead letters, slow batches)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.mode = "normal"
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        big = {"events": [{"path": f"/pay/{i}", "status": 500, "tenant": "acme"} for i in range(1000)]}
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                if self.mode == "normal":
                    client.post("/v1/label", json={"path": "/home", "status": 200})
                elif self.mode == "dead_letters":
                    client.post("/v1/label", json={"events": [{"path": "/home"}, "not an object"]})
                else:
                    client.post("/v1/label", json=big)  # a 1,000-event batch: one request far over 2.5 ms
                self.sent += 1
                self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(prom + "/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _scalar(prom: str, expr: str) -> float | None:
    result = _query(prom, expr)
    return float(result[0]["value"][1]) if result else None


def _alerts(prom: str) -> list[dict[str, Any]]:
    return httpx.get(prom + "/api/v1/alerts").json()["data"]["alerts"]


def _active(prom: str, name: str, severity: str = "page", state: str | None = None) -> list[dict[str, Any]]:
    return [a for a in _alerts(prom) if a["labels"]["alertname"] == name and a["labels"].get("severity") == severity
            and (state is None or a["state"] == state)]


def test_normal_traffic_then_dead_letters_then_slow_batches(stack):
    """Normal traffic pages nobody and records 0 dead letters; a DLQ spike, a latency regression and a stopped labeler each fire their page alert."""
    prom = stack["prom"]
    with Traffic(stack["serve"]) as traffic:
        # Normal traffic until Prometheus has evaluated more than the longest page window (15 s) of it.
        _wait_for("recording rules over 15 s of normal traffic",
                  lambda: (_scalar(prom, "count_over_time(activelabel:dlq:ratio_rate5s[25s])") or 0) >= 18, timeout_s=90)
        for alert in _alerts(prom):
            assert alert["labels"].get("severity") != "page", f"page alert on normal traffic: {alert}"
        assert _scalar(prom, "activelabel:dlq:ratio_rate5s") == 0
        assert _scalar(prom, 'activelabel:label_coverage:ratio_rate5s{label="priority"}') == pytest.approx(1.0)
        assert (_scalar(prom, 'activelabel:events_labeled:rate5s{door="label"}') or 0) > 1
        assert (_scalar(prom, 'slo:sli_error:ratio_rate3s{sloth_slo="label-latency"}') or 0) < 0.144
        assert _scalar(prom, "up") == 1

        # Half of every request's events dead-lettered.
        traffic.mode = "dead_letters"
        _wait_for("the DLQ page alerts to fire", lambda: _active(prom, "ActivelabelDeadLetterBudgetBurn", state="firing")
                  and _active(prom, "ActivelabelDeadLetterSpike", state="firing"))
        _wait_for("the DLQ ratio recording rule to settle at one half",
                  lambda: abs((_scalar(prom, "activelabel:dlq:ratio_rate5s") or 0) - 0.5) < 0.02)
        reasons = {r["metric"]["reason"] for r in _query(prom, "activelabel:dead_lettered:rate5s > 0")}
        assert reasons == {"not_an_object"}
        assert not _active(prom, "ActivelabelLatencyBudgetBurn", state="firing")

        # A latency regression: every request is a 1,000-event batch (milliseconds, against a 2.5 ms SLO).
        traffic.mode = "slow"
        firing = _wait_for("the latency page alert to fire",
                           lambda: _active(prom, "ActivelabelLatencyBudgetBurn", state="firing"), timeout_s=90)
        assert firing[0]["labels"]["sloth_slo"] == "label-latency"
        assert firing[0]["annotations"]["runbook_url"].endswith("#activelabel-latency-budget-burn")
        assert (_scalar(prom, 'slo:sli_error:ratio_rate3s{sloth_slo="label-latency"}') or 0) > 0.5
        assert traffic.sent > 0

    # The labeler goes away: Prometheus' own `up` turns 0 and the down alert pages.
    _stop(stack["serve_process"])
    down = _wait_for("the labeler-down page alert to fire", lambda: _active(prom, "ActivelabelDown", state="firing"))
    assert [a["labels"].get("instance") for a in down] == [stack["serve"].removeprefix("http://")]  # one alert, not two
