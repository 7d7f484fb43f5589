"""`activelabel validate`, `test` and `explain`: a policy is checked before it runs."""

from __future__ import annotations

import subprocess
import sys

from conftest import EXAMPLES

CLI = [sys.executable, "-m", "activelabel"]

GOOD = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: p}
labels:
  priority: {type: enum, values: [critical, normal], default: normal}
rules:
  - {id: pay-5xx, label: priority, value: critical, when: 'event.path.startsWith("/pay") && event.status >= 500'}
tests:
  - name: payment failure is critical
    event: {path: /pay/1, status: 503}
    expect: {priority: critical}
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_validate_accepts_a_good_policy_and_prints_its_version(write_policy):
    """A valid policy validates with exit 0 and its version."""
    res = run("validate", str(write_policy(GOOD)))
    assert res.returncode == 0, res.stderr
    assert "sha256:" in res.stdout and "1 rules" in res.stdout


def test_validate_reports_every_error_at_once_with_positions_and_suggestions(write_policy):
    """Several mistakes are all reported, each with file:line:column, rule id, caret or suggestion."""
    bad = GOOD.replace("label: priority, value: critical", "label: priorty, value: critical") + """
  - {id: two, label: priority, value: urgent}
  - {id: three, label: priority, value: normal, when: 'event.status >= '}
"""
    bad = bad.replace("tests:\n  - name: payment failure is critical\n    event: {path: /pay/1, status: 503}\n    expect: {priority: critical}\n", "") + "\n"
    path = write_policy(bad.replace("rules:\n", "rules:\n", 1))
    res = run("validate", str(path))
    assert res.returncode == 1
    err = res.stderr
    assert "3 errors" in err
    assert "priorty" in err and "did you mean `priority`" in err.replace("'", "`")
    assert "urgent" in err
    assert f"{path}:" in err
    assert "^" in err  # a caret under the CEL syntax error
    assert "pay-5xx" in err and "three" in err


def test_validate_refuses_a_policy_whose_own_test_fails(write_policy):
    """A failing policy test makes validate exit 1 and say which expectation failed."""
    res = run("validate", str(write_policy(GOOD.replace("expect: {priority: critical}", "expect: {priority: normal}"))))
    assert res.returncode == 1
    assert "payment failure is critical" in res.stderr and "expected 'normal', got 'critical'" in res.stderr


def test_test_command_prints_pytest_like_results(write_policy):
    """`activelabel test` lists each policy test and ends with a passed/failed count."""
    res = run("test", str(write_policy(GOOD)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "payment failure is critical PASSED" in res.stdout
    assert "1 passed, 0 failed" in res.stdout
    res = run("test", str(write_policy(GOOD.replace("status: 503}", "status: 200}"))))
    assert res.returncode == 1
    assert "FAILED" in res.stdout and "0 passed, 1 failed" in res.stdout
    assert "expected \"critical\", got \"normal\"" in res.stdout


def test_example_policies_pass_their_own_tests():
    """The shipped example policies validate and pass their tests."""
    for policy in (EXAMPLES / "edge" / "policy.yaml", EXAMPLES / "bgl" / "policy.yaml"):
        res = run("test", str(policy))
        assert res.returncode == 0, res.stdout + res.stderr


def test_explain_shows_a_table_of_how_each_label_was_decided():
    """`activelabel explain` prints value, source and the matched/lost rules per label."""
    res = run("explain", "--policy", str(EXAMPLES / "edge" / "policy.yaml"),
              '{"client_ip": "66.249.73.135", "path": "/x", "status": 503, "bytes": 10, "user_agent": "Googlebot"}')
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "priority" in out and "critical" in out and "rule:server-error-critical" in out
    assert "bot-traffic-low" in out  # it matched but lost
    assert "66.249.73.135" not in out and "‹pii›" in out  # pii values are masked unless asked for
    res = run("explain", "--policy", str(EXAMPLES / "edge" / "policy.yaml"), "{not json")
    assert res.returncode == 2 and "not valid JSON" in res.stderr
