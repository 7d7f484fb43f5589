"""The service under hostile input: a policy edit cannot disclose the environment, feedback values keep their type."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY, TOKENS, auth, build_app

from activelabel.quality.store import DecisionStore
from activelabel.service import ServiceConfig
from activelabel.service.config import StoreConfig
from activelabel.service.testing import serve_in_thread
from test_service_cli import _free_port, _wait_ready

ADMIN = "admin-tok-5b0e1f3a9c7d42e8"
CANARY = "canary-7e3d9a1c55f04b2a"


def _serve(policy: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """A real `activelabel serve` whose token table comes from $ACTIVELABEL_TOKENS, as in production."""
    env = {k: v for k, v in os.environ.items() if k != "ACTIVELABEL_ALLOW_PATHS"}
    tokens = {**TOKENS, ADMIN: {"scopes": ["label", "admin"], "name": "ops2"}}
    env.update(PYTHONUNBUFFERED="1", ACTIVELABEL_TOKENS=json.dumps({"tokens": tokens}), ACTIVELABEL_CANARY=CANARY)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "activelabel", *extra, "serve", "--policy", str(policy), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, proc)
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    return stderr


@pytest.mark.parametrize("allow", [False, True], ids=["not-allowed", "proc-allowed"])
def test_reload_with_an_environ_include_leaks_no_token(tmp_path: Path, allow: bool) -> None:
    """A reload of a policy including /proc/self/environ answers 422; neither the body nor the log holds a token or env value."""
    policy = tmp_path / "policy.yaml"
    shutil.copy(POLICY, policy)
    proc, url = _serve(policy, *(["--allow-path", "/proc", "--allow-path", "/etc"] if allow else []))
    try:
        text = policy.read_text().replace("labels:\n", 'include: ["/proc/self/environ", "/etc/passwd"]\nlabels:\n', 1)
        policy.write_text(text)
        r = httpx.post(url + "/v1/policy/reload", headers=auth(ADMIN), timeout=30)
        assert r.status_code == 422
        messages = " ".join(e["message"] for e in r.json()["errors"])
        if allow:
            assert "invalid YAML" in messages and "must be a mapping" in messages
        else:
            assert "outside the policy's folder" in messages and "--allow-path" in json.dumps(r.json())
        # still serving the old policy
        assert httpx.post(url + "/v1/label", json={"path": "/pay/1", "status": 200}, headers=auth(ADMIN)).status_code == 200
    finally:
        log = _stop(proc)
    for secret in (ADMIN, CANARY, "label-token", "admin-token"):
        assert secret not in r.text
        assert secret not in log
    assert "policy reload refused" in log
    assert Path("/etc/passwd").read_text().splitlines()[0] not in r.text + log


@pytest.fixture
def recorded(tmp_path: Path):  # type: ignore[no-untyped-def]
    store_path = tmp_path / "decisions.db"
    config = ServiceConfig(store=StoreConfig(path=str(store_path), id_field="order_id"))
    with serve_in_thread(build_app(config=config)) as url, httpx.Client(base_url=url) as client:
        client.post("/v1/label", json={"order_id": "o-1", "path": "/"}, headers=auth("label-token"))
        yield client, store_path


@pytest.mark.parametrize("value", [["a", "b"], {"x": 1}, 42, 1.5, True, None], ids=repr)
def test_feedback_refuses_non_strings_for_a_string_label(recorded, value: object) -> None:
    """Lists, objects, numbers and booleans for a string label are refused (4xx) naming the label, and nothing is stored."""
    client, store_path = recorded
    r = client.post("/v1/feedback", json={"id": "o-1", "label": "api_key_owner", "value": value}, headers=auth("feedback-token"))
    assert r.status_code == 422
    body = r.json()
    assert body["accepted"] == 0
    assert "'api_key_owner'" in body["rejected"][0]["reason"]
    with DecisionStore(store_path) as store:
        assert store.truth_map() == {}


def test_feedback_refuses_lists_and_objects_for_any_label_but_keeps_the_good_items(recorded) -> None:
    """A list for an enum label is refused per item; the valid item of the same request is stored (200)."""
    client, store_path = recorded
    r = client.post("/v1/feedback", json={"items": [
        {"id": "o-1", "label": "priority", "value": ["high"]},
        {"id": "o-1", "label": "api_key_owner", "value": "team-a"},
    ]}, headers=auth("feedback-token"))
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert [x["index"] for x in r.json()["rejected"]] == [0]
    assert "'priority'" in r.json()["rejected"][0]["reason"]
    with DecisionStore(store_path) as store:
        assert store.truth_map() == {("o-1", "api_key_owner"): "team-a"}
