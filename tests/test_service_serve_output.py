"""``activelabel serve`` as a process: what it prints, and what its policy watch reacts to."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY

SERVE = [sys.executable, "-m", "activelabel", "serve"]
WAIT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ACTIVELABEL_TOKENS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _version(url: str) -> str | None:
    try:
        return httpx.get(url + "/v1/policy", timeout=2).json()["version"]
    except httpx.HTTPError:
        return None


def _poll(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S}s"
        time.sleep(0.05)


def test_serve_refusal_is_one_plain_line_without_markup_in_a_pipe():
    """Without tokens, serve's refusal in a pipe is one unwrapped line quoting the YAML shape literally, no rich markup escapes."""
    r = subprocess.run([*SERVE, "--policy", str(POLICY), "--port", str(_free_port())],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "(YAML: token -> {scopes: [label, feedback, admin], clearances: [secret]})" in line
    assert "--no-auth for local use" in line  # the whole hint on the same line
    assert "\\[" not in r.stderr and "[/]" not in r.stderr and "\x1b[" not in r.stderr


def test_watch_ignores_a_log_file_appended_in_the_policy_folder(tmp_path):
    """With --watch, a log file growing beside the policy causes no reload and no watcher line at INFO; editing the policy still reloads once."""
    policy = tmp_path / "policy.yaml"
    shutil.copy(POLICY, policy)
    log_file = tmp_path / "service.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*SERVE, "--policy", str(policy), "--no-auth", "--watch", "--port", str(port), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _poll(lambda: proc.poll() is not None or _version(url) is not None, "serve becoming ready")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        first = _version(url)
        # The log grows between requests for a while, as a service log beside the policy does.
        with log_file.open("a") as log:
            deadline = time.monotonic() + 2.0
            n = 0
            while time.monotonic() < deadline:
                log.write(f"line {n}\n")
                log.flush()
                n += 1
                assert _version(url) == first  # no reload while the log grows
        policy.write_text(policy.read_text().replace('version: "1"', 'version: "1-watched"'))
        _poll(lambda: (_version(url) or "").endswith("/1-watched"), "the watched policy edit being served")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT_S)
    assert stderr.count("trigger=watch") == 1, stderr
    assert "change detected" not in stderr and "changes detected" not in stderr, stderr
