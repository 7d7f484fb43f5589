"""`activelabel tap` and the `/ui` status page against a real `serve` on a free port (and real headless Chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import orjson
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import auth, build_app, build_labeler

from activelabel.service.testing import serve_in_thread

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
EMAIL = "jane.doe@example.com"


def _traffic(url: str, stop: threading.Event, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            client.post("/v1/label", json={"path": "/pay/1" if i % 2 else "/home", "status": 503, "email": EMAIL}, headers=headers)
            i += 1
            stop.wait(0.02)


def test_tap_streams_filtered_decisions_with_their_path_and_protected_values(tmp_path):
    """`activelabel tap --label priority=critical --limit 2` prints two JSON decisions naming the winning and losing rules, the pii value masked."""
    with serve_in_thread(build_app()) as url:
        stop = threading.Event()
        sender = threading.Thread(target=_traffic, args=(url, stop, auth("label-token")), daemon=True)
        sender.start()
        try:
            run = subprocess.run([sys.executable, "-m", "activelabel", "tap", "--url", url, "--label", "priority=critical", "--limit", "2"],
                                 capture_output=True, text=True, env={**ENV, "ACTIVELABEL_TOKEN": "admin-token"}, cwd=tmp_path, timeout=120)
            refused = subprocess.run([sys.executable, "-m", "activelabel", "tap", "--url", url, "--token", "label-token", "--limit", "1"],
                                     capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
        finally:
            stop.set()
            sender.join(10)
    assert run.returncode == 0, run.stderr
    decisions = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert len(decisions) == 2
    for d in decisions:
        assert d["door"] == "label" and d["policy"] == "service-fixture"
        assert d["labels"]["priority"] == "critical"
        assert d["path"]["priority"]["source"] == "rule:pay-5xx"
        assert d["path"]["priority"]["lost"] == ["rule:pay-any"] and d["path"]["priority"]["lost_values"] == {"rule:pay-any": "high"}
        assert d["labels"]["customer_email"] != EMAIL and d["path"]["customer_email"]["source"] == "rule:email"
    assert EMAIL not in run.stdout and EMAIL not in run.stderr
    assert "tapping service-fixture" in run.stderr  # the notice goes to stderr: stdout stays one decision per line
    assert refused.returncode == 1 and "admin scope" in refused.stderr


def test_tap_refuses_a_malformed_filter_with_what_to_send():
    """A label filter without a value is a 400 that shows the expected shape."""
    with serve_in_thread(build_app()) as url:
        answer = httpx.get(url + "/v1/tap", params={"label": "priority"}, headers=auth("admin-token"))
    assert answer.status_code == 400
    assert "NAME=VALUE" in answer.json()["error"]["message"]


def test_status_page_renders_in_headless_chromium_with_counts_only_for_sensitive_labels(tmp_path):
    """Chromium renders /ui offline: policy and version, coverage bars, rule hits, recent decisions, and no pii value anywhere."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed for this test (apt-get install chromium)"
    with serve_in_thread(build_app(no_auth=True)) as url:
        with httpx.Client(base_url=url) as client:
            for i in range(12):
                client.post("/v1/label", json={"path": "/pay/1" if i % 3 else "/home", "status": 503, "tenant": "acme" if i % 2 else "x",
                                               "email": EMAIL})
            client.post("/v1/label", json={"events": [{"path": "/a"}, "not an object"]})
            version = client.get("/v1/policy").json()["version"]
        shot = tmp_path / "ui.png"
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run([*flags, "--dump-dom", url + "/ui"], check=True, capture_output=True, text=True, timeout=120).stdout
        subprocess.run([*flags, "--window-size=1280,1800", f"--screenshot={shot}", url + "/ui"], check=True, capture_output=True, timeout=120)
    assert "service-fixture" in dom and version in dom
    assert "counts only (sensitive)" in dom and "pay-5xx" in dom and "not_an_object" in dom
    assert EMAIL not in dom
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    bars = int(((abs(r - 0x4C) < 12) & (abs(g - 0x78) < 12) & (abs(b - 0xA8) < 12)).sum())  # the coverage bars' blue
    assert bars > 300


def test_status_page_shows_the_rollout_in_progress_and_none_without_one():
    """With a real rollout of a candidate policy the page names its id, state, step and both versions; without one it says none."""
    from activelabel.governance.rollout import Rollout, RolloutSpec
    from activelabel.observability.status_page import gather, render

    app = build_app(no_auth=True)
    state = app.state
    serving = state.runtime.current.labeler
    candidate = build_labeler()
    spec = RolloutSpec.from_mapping({"key": "event.tenant", "steps": [10, 100], "interval": "10s", "min_events": 10})
    rollout = Rollout("r-ui", spec, serving=serving, candidate=candidate)
    page = render(gather("serve", state.runtime, state.metrics, state.metrics.tap, rollout=rollout))
    rollout_part = page.split("<h2>Rollout</h2>", 1)[1].split("<h2>", 1)[0]
    assert "r-ui" in rollout_part and "progressing" in rollout_part and str(serving.version) in rollout_part
    bare = render(gather("serve", state.runtime, state.metrics, state.metrics.tap, rollout=None))
    assert "none" in bare.split("<h2>Rollout</h2>", 1)[1].split("<h2>", 1)[0]


def test_tap_lines_format_is_one_readable_line_per_decision(tmp_path):
    """`activelabel tap --lines` prints time, door, labels and the decision path on one line each."""
    with serve_in_thread(build_app()) as url:
        stop = threading.Event()
        sender = threading.Thread(target=_traffic, args=(url, stop, auth("label-token")), daemon=True)
        sender.start()
        try:
            run = subprocess.run([sys.executable, "-m", "activelabel", "tap", "--url", url, "--token", "admin-token", "--rule", "pay-any",
                                  "--limit", "1", "--lines"], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
        finally:
            stop.set()
            sender.join(10)
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    assert " label priority=critical " in line
    assert "priority<-rule:pay-5xx (lost: rule:pay-any)" in line and EMAIL not in line


def test_recent_decisions_name_the_door_that_made_them():
    """An Envoy ext_authz check and an admission review show up among the recent decisions under their own door."""
    with serve_in_thread(build_app(no_auth=True)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v1/extauthz/pay/1").status_code == 200
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": "u1", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": {"metadata": {}, "spec": {"containers": []}}}}
        assert client.post("/v1/admission", json=review).status_code == 200
        page = client.get("/ui").text
    recent = page.split("<h2>Recent decisions</h2>", 1)[1]
    assert "<td>ext_authz</td>" in recent and "<td>admission</td>" in recent
