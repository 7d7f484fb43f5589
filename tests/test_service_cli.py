"""``activelabel serve`` as a process: refuses to start without an auth choice, reloads on SIGHUP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import BAD_POLICY, POLICY, TOKENS, auth

SERVE = [sys.executable, "-m", "activelabel", "serve"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ACTIVELABEL_TOKENS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not become ready")


def test_serve_refuses_to_start_without_tokens_or_no_auth():
    """Without --tokens, $ACTIVELABEL_TOKENS or --no-auth, serve exits 2 and says which option to use."""
    r = subprocess.run([*SERVE, "--policy", str(POLICY), "--port", str(_free_port())], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2
    assert "--tokens" in r.stderr and "--no-auth" in r.stderr


def test_serve_refuses_a_bad_policy_listing_every_error():
    """serve on an invalid policy exits 1 and prints each error with file and line."""
    r = subprocess.run([*SERVE, "--policy", str(BAD_POLICY), "--no-auth", "--port", str(_free_port())], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1
    assert "3 errors" in r.stderr and "bad_policy.yaml:" in r.stderr


@pytest.fixture
def served(tmp_path):
    policy = tmp_path / "policy.yaml"
    shutil.copy(POLICY, policy)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": TOKENS}))
    port = _free_port()
    proc = subprocess.Popen(
        [*SERVE, "--policy", str(policy), "--tokens", str(tokens), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield url, policy, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sighup_reloads_the_policy_and_logs_both_versions(served):
    """Editing the policy and sending SIGHUP makes the running process serve the new version."""
    url, policy, proc = served
    old = httpx.get(url + "/v1/policy", headers=auth("label-token")).json()["version"]
    policy.write_text(policy.read_text().replace('version: "1"', 'version: "1-sighup"'))
    proc.send_signal(signal.SIGHUP)
    new = old
    for _ in range(300):  # poll; no timing assertion
        new = httpx.get(url + "/v1/policy", headers=auth("label-token")).json()["version"]
        if new != old:
            break
        time.sleep(0.05)
    assert new.endswith("/1-sighup")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert "trigger=sighup" in stderr and old in stderr and new in stderr


def test_no_auth_start_warns_loudly(tmp_path):
    """--no-auth starts the service but prints a warning that authentication is off."""
    port = _free_port()
    proc = subprocess.Popen([*SERVE, "--policy", str(POLICY), "--no-auth", "--port", str(port)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert "authentication is OFF" in stderr


def test_serve_record_enables_feedback(tmp_path):
    """serve --record STORE --id-field F records decisions under the event's id and accepts feedback for them."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": TOKENS}))
    port = _free_port()
    cmd = [*SERVE, "--policy", str(POLICY), "--tokens", str(tokens), "--port", str(port),
           "--record", str(tmp_path / "d.db"), "--id-field", "order_id"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        labeled = httpx.post(url + "/v1/label", json={"order_id": "A1", "path": "/pay"}, headers=auth("label-token")).json()
        feedback = httpx.post(url + "/v1/feedback", json={"id": "A1", "label": "priority", "value": "low"}, headers=auth("feedback-token")).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert labeled["id"] == "A1"
    assert feedback == {"accepted": 1, "rejected": []}


def test_sighup_rotates_tokens(served, tmp_path):
    """After the token file changes and SIGHUP arrives, a removed token is refused and a new one works."""
    url, policy, proc = served
    tokens_file = policy.parent / "tokens.yaml"
    rotated = {k: v for k, v in TOKENS.items() if k != "label-token"} | {"label-token-2": {"scopes": ["label"]}}
    tokens_file.write_text(yaml.safe_dump({"tokens": rotated}))
    proc.send_signal(signal.SIGHUP)
    event = {"path": "/"}
    for _ in range(300):  # poll; no timing assertion
        if httpx.post(url + "/v1/label", json=event, headers=auth("label-token-2")).status_code == 200:
            break
        time.sleep(0.05)
    assert httpx.post(url + "/v1/label", json=event, headers=auth("label-token-2")).status_code == 200
    assert httpx.post(url + "/v1/label", json=event, headers=auth("label-token")).status_code == 401


def test_serve_over_tls_answers_admission_reviews(tmp_path):
    """With --tls-cert/--tls-key the webhook answers AdmissionReviews over HTTPS verified against its certificate."""
    from harness import SHARED_DATA

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": TOKENS}))
    port = _free_port()
    cmd = [*SERVE, "--policy", str(POLICY), "--tokens", str(tokens), "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    url = f"https://127.0.0.1:{port}"
    review = (SHARED_DATA / "k8s_admission" / "pod_with_privileged_containers.json").read_bytes()
    try:
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(cert))) as client:
            for _ in range(600):  # until ready; no timing assertion
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            r = client.post("/v1/admission", content=review, headers={**auth("label-token"), "content-type": "application/json"})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert r.status_code == 200
    assert r.json()["response"]["allowed"] is True and r.json()["response"]["patchType"] == "JSONPatch"


def test_serve_refuses_half_a_tls_configuration():
    """--tls-cert without --tls-key (or the reverse) exits 1 saying both are needed."""
    r = subprocess.run([*SERVE, "--policy", str(POLICY), "--no-auth", "--tls-cert", "x.crt"], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 1
    assert "--tls-key" in r.stderr
