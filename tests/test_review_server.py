"""The review page in real headless Chromium, and Label Studio's ML backend protocol over real HTTP."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from activelabel.policy import load_policy
from activelabel.quality.review_server import LabelStudioBackend, ReviewPage
from activelabel.quality.store import DecisionStore
from loop_store import FIXTURES, recorded_store

CONFIG = """<View>
  <Header value="Check the label: category"/>
  <Text name="text" value="$text"/>
  <Choices name="category" toName="text" choice="single" showInLine="true">
    <Choice value="KERNDTLB"/><Choice value="KERNSTOR"/><Choice value="APPREAD"/><Choice value="none"/>
  </Choices>
</View>"""


def _store_with_policy(tmp_path: Path) -> DecisionStore:
    path = recorded_store(tmp_path)
    return DecisionStore(path, policy=load_policy(FIXTURES / "policy.yaml"))


@pytest.fixture
def backend(tmp_path):
    store = _store_with_policy(tmp_path)
    app = LabelStudioBackend(FIXTURES / "policy.yaml", store, "category")
    app.start()
    yield app, store
    app.stop()
    store.close()


def _annotation(choice: str, *, ann_id: int = 11, updated: str = "2026-12-01T10:00:05.000000Z") -> dict[str, Any]:
    # The annotation object as Label Studio 1.x serialises it in a webhook payload.
    return {"id": ann_id, "result": [{"id": "Xq1", "type": "choices", "value": {"choices": [choice]}, "origin": "manual",
                                      "to_name": "text", "from_name": "category"}],
            "created_username": " ops@example.com, 1", "created_ago": "0 minutes", "completed_by": 1,
            "was_cancelled": False, "ground_truth": False, "created_at": "2026-12-01T10:00:00.000000Z",
            "updated_at": updated, "draft_created_at": None, "lead_time": 4.31, "import_id": None,
            "last_action": None, "task": 7, "project": 1, "updated_by": 1, "parent_prediction": None,
            "parent_annotation": None, "last_created_by": None}


def _task(record_id: str | None, content: str) -> dict[str, Any]:
    data = {"id": "x", "content": content, "level": "FATAL", "component": "KERNEL", "text": content,
            "activelabel_label": "category"}
    if record_id is not None:
        data["activelabel_id"] = record_id
    return {"id": 7, "data": data, "meta": {}, "created_at": "2026-12-01T09:59:00.000000Z",
            "updated_at": "2026-12-01T10:00:05.000000Z", "is_labeled": True, "overlap": 1, "inner_id": 7,
            "total_annotations": 1, "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 1, "updated_by": 1,
            "file_upload": None, "comment_authors": []}


def _webhook(action: str, task: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
    return {"action": action, "annotation": annotation, "task": task,
            "project": {"id": 1, "title": "alerts", "label_config": CONFIG, "created_at": "2026-12-01T09:00:00Z"}}


def test_health_and_setup_answer_as_label_studio_expects(backend):
    """GET /health says UP with a model class and POST /setup (Label Studio's body) returns a model_version."""
    app, _ = backend
    health = httpx.get(app.url + "/health").json()
    assert health["status"] == "UP" and health["model_class"]
    setup = httpx.post(app.url + "/setup", json={
        "project": "1.1764583200", "schema": CONFIG, "hostname": "http://localhost:8080",
        "access_token": "not-used", "model_version": None, "extra_params": None}).json()
    assert setup["model_version"].startswith("activelabel:")


def test_predict_returns_our_label_with_its_confidence_in_label_studio_shape(backend):
    """POST /predict with Label Studio's request gives one prediction per task: the rule's value and score."""
    app, _ = backend
    body = {"tasks": [_task(None, "data storage interrupt"), _task(None, "ciod: something new")],
            "model_version": None, "project": "1.1764583200", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}
    res = httpx.post(app.url + "/predict", json=body)
    assert res.status_code == 200
    storage, unknown = res.json()["results"]
    assert storage["result"] == [{"from_name": "category", "to_name": "text", "type": "choices",
                                  "value": {"choices": ["KERNSTOR"]}}]
    assert storage["score"] == pytest.approx(0.8) and storage["model_version"] == "rule:storage"
    assert unknown["result"][0]["value"]["choices"] == ["none"] and unknown["model_version"] == "default"


def test_webhook_annotation_created_then_updated_lands_as_ground_truth(backend):
    """ANNOTATION_CREATED stores the annotator's choice; ANNOTATION_UPDATED replaces it; both answer 201."""
    app, store = backend
    created = httpx.post(app.url + "/webhook", json=_webhook("ANNOTATION_CREATED", _task("e07", "x"), _annotation("APPREAD")))
    assert created.status_code == 201 and created.json()["result"]["accepted"] == 1
    (truth,) = store.ground_truth("category")
    assert (truth.record_id, truth.value, truth.who, truth.how) == ("e07", "APPREAD", "1", "label-studio")
    updated = httpx.post(app.url + "/webhook", json=_webhook("ANNOTATION_UPDATED", _task("e07", "x"),
                                                              _annotation("none", updated="2026-12-01T10:02:00Z")))
    assert updated.status_code == 201
    assert [t.value for t in store.ground_truth("category")] == ["none"]


def test_webhook_refuses_a_foreign_task_and_ignores_other_events(backend):
    """A task made in Label Studio (no activelabel id) is refused with the reason and counted; other actions are ignored."""
    app, store = backend
    res = httpx.post(app.url + "/webhook", json=_webhook("ANNOTATION_CREATED", _task(None, "x"), _annotation("none")))
    assert res.status_code == 201
    assert res.json()["result"]["accepted"] == 0 and "activelabel_id" in res.json()["result"]["rejected"][0]
    assert store.counts()["rejected_feedback"] == 1 and store.ground_truth() == []
    other = httpx.post(app.url + "/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert other.status_code == 200 and other.json() == {"status": "Unknown event"}


# -- the review page in headless Chromium ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Chromium:
    """Headless Chromium driven over the DevTools protocol (real key presses, real rendering)."""

    def __init__(self, tmp_path: Path) -> None:
        import websocket

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "headless Chromium is needed for this test (apt-get install chromium)"
        port = _free_port()
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             f"--remote-debugging-port={port}", "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                time.sleep(0.1)  # the DevTools port is not listening yet: poll until the deadline
        assert targets, "Chromium's DevTools endpoint did not come up"
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def eval(self, expr: str) -> Any:
        return self.send("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expr)
            if value:
                return value
            time.sleep(0.05)  # polling the page until the condition holds, bounded by the deadline
        raise AssertionError(f"page never satisfied: {expr}")

    def key(self, key: str, code: str, text: str | None = None) -> None:
        self.send("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, text=text or "",
                  windowsVirtualKeyCode=ord(key.upper()) if len(key) == 1 else 13)
        self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code,
                  windowsVirtualKeyCode=ord(key.upper()) if len(key) == 1 else 13)

    def type(self, text: str) -> None:
        for ch in text:
            self.send("Input.dispatchKeyEvent", type="char", text=ch, key=ch)

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_review_page_is_answered_with_the_keyboard_in_headless_chromium(tmp_path):
    """In Chromium: key 2 answers the first item, s skips the next, n + typing stores a new value; the page shows it."""
    store = DecisionStore(recorded_store(tmp_path))  # no registry: category is an open label here
    page = ReviewPage(store, "category", text_field="content", who="ana")
    url = page.start()
    browser = _Chromium(tmp_path)
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=url + "/")
        first = browser.wait_for("document.getElementById('record-id') && document.getElementById('record-id').textContent")
        second_choice = browser.eval("document.querySelector('button[data-key=\"2\"]').value")
        browser.key("2", "Digit2", "2")
        browser.wait_for(f"document.getElementById('message') && document.getElementById('message').textContent.includes('saved {first}')")
        second = browser.eval("document.getElementById('record-id').textContent")
        assert second != first
        browser.key("s", "KeyS", "s")
        browser.wait_for(f"document.getElementById('message') && document.getElementById('message').textContent.includes('skipped {second}')")
        third = browser.eval("document.getElementById('record-id').textContent")
        browser.key("n", "KeyN", "n")
        browser.wait_for("document.activeElement && document.activeElement.id === 'new-value'")
        browser.type("KERNPANIC")
        browser.key("Enter", "Enter", "\r")
        browser.wait_for(f"document.getElementById('message') && document.getElementById('message').textContent.includes('saved {third}')")
        shot = browser.send("Page.captureScreenshot", format="png")["data"]
        import base64

        (tmp_path / "review-page.png").write_bytes(base64.b64decode(shot))
        html = browser.eval("document.body.innerText")
    finally:
        browser.close()
        page.stop()
    truth = {t.record_id: (t.value, t.who, t.how) for t in store.ground_truth("category")}
    assert truth == {first: (second_choice, "ana", "review-page"), third: ("KERNPANIC", "ana", "review-page")}
    assert [v["value"] for v in store.learned_values("category")] == [second_choice, "KERNPANIC"]
    assert "2 reviewed so far" in html and "KERNPANIC" in html  # the new value is now a choice
    assert len((tmp_path / "review-page.png").read_bytes()) > 5000
    store.close()


def test_review_page_never_offers_a_held_out_record(tmp_path):
    """A record in the store's holdout is never shown for review, whatever its score."""
    store = _store_with_policy(tmp_path)
    page = ReviewPage(store, "category", strategy="uncertainty")
    everything = {d.record_id for d in store.decisions()}
    store.set_holdout("category", everything - {"e03"})
    page.start()
    try:
        html = httpx.get(page.url + "/").text
        assert 'data-id="e03"' in html
        httpx.post(page.url + "/answer", data={"id": "e03", "value": "none"}, follow_redirects=False)
        assert "Nothing left to review" in httpx.get(page.url + "/").text
    finally:
        page.stop()
    assert [t.record_id for t in store.ground_truth("category")] == ["e03"]
    store.close()


def test_review_page_shows_a_refused_value_with_its_reason(tmp_path):
    """A value outside a closed enum is refused on the page with the reason, and nothing is stored."""
    store = _store_with_policy(tmp_path)
    page = ReviewPage(store, "category")
    page.start()
    try:
        res = httpx.post(page.url + "/answer", data={"id": "e01", "new_value": "PURPLE"}, follow_redirects=True)
    finally:
        page.stop()
    assert "refused: value &#x27;PURPLE&#x27; is outside label &#x27;category&#x27;" in res.text
    assert store.ground_truth() == [] and orjson.dumps(store.rejections()[0]["value"]) == b'"PURPLE"'
    store.close()


def _serve(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Start an `activelabel review ...` server in a subprocess on a free port; return it and its URL."""
    import os
    import re
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "activelabel.cli.main", "review", *args, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    return proc, match.group(0)


def test_review_serve_and_ml_backend_commands_serve_on_a_free_port(tmp_path):
    """`review serve` and `review ml-backend` print their URL and answer /health there."""
    db = recorded_store(tmp_path)
    page, page_url = _serve(["serve", "--store", str(db), "--label", "category"], tmp_path)
    backend, backend_url = _serve(["ml-backend", "--store", str(db), "--label", "category",
                                   "--policy", str(FIXTURES / "policy.yaml")], tmp_path)
    try:
        assert httpx.get(page_url + "/health").json() == {"status": "UP"}
        assert "Review: category" in httpx.get(page_url + "/").text
        assert httpx.get(backend_url + "/health").json()["status"] == "UP"
    finally:
        for proc in (page, backend):
            proc.terminate()
            proc.wait(timeout=30)


def test_review_page_renders_items_a_rule_decided_in_a_store_written_by_label_record(tmp_path):
    """`label --record` keeps each label's matched rules as source strings: the page shows them (it used to answer 500)."""
    import sys

    repo = Path(__file__).resolve().parents[1]
    db = tmp_path / "edge.db"
    subprocess.run([sys.executable, "-m", "activelabel", "label", str(repo / "examples" / "edge" / "requests.jsonl"),
                    "--policy", str(repo / "examples" / "edge" / "policy.yaml"), "--record", str(db),
                    "-o", str(tmp_path / "out.jsonl")], check=True, capture_output=True, timeout=120)
    store = DecisionStore(db)
    page = ReviewPage(store, "priority", strategy="random")
    page.start()
    try:
        seen = []
        for _ in range(5):
            res = httpx.get(page.url + "/")
            assert res.status_code == 200, res.text
            seen.append(res.text)
            rid = res.text.split('data-id="')[1].split('"')[0]
            httpx.post(page.url + "/skip", data={"id": rid}, follow_redirects=False)
    finally:
        page.stop()
        store.close()
    assert any("<td>rules matched</td><td>rule:" in html for html in seen)
    assert not any(">None<" in html for html in seen)


def test_review_serve_on_a_port_in_use_says_so_in_one_line(tmp_path):
    import os
    import sys

    db = recorded_store(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        res = subprocess.run([sys.executable, "-m", "activelabel", "review", "serve", "--store", str(db), "--label",
                              "category", "--port", str(port)], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"port {port} cannot be used" in res.stderr and "--port" in res.stderr
