"""`activelabel diff`: a shadow run shows which decisions a policy change would alter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import DATA, EXAMPLES

CLI = [sys.executable, "-m", "activelabel"]


def test_diff_reports_rule_changes_and_changed_decisions_on_real_data(tmp_path):
    """Narrowing the 4xx rule shows the changed rule and the 404s that move class, per label."""
    shutil.copy(EXAMPLES / "edge" / "known_clients.csv", tmp_path)
    text = (EXAMPLES / "edge" / "policy.yaml").read_text()
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(text.replace("when: event.status >= 400\n", "when: event.status >= 400 && event.status != 404\n", 1))
    log = DATA / "http_access_log" / "apache_logs.parsed.jsonl"
    res = subprocess.run([*CLI, "diff", str(EXAMPLES / "edge" / "policy.yaml"), str(candidate), str(log), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert any("rule status-4xx: changed" in c for c in result["changes"])
    shadow = result["shadow"]
    n404 = sum(1 for line in log.read_text().splitlines() if json.loads(line).get("status") == 404)
    assert shadow["records"] == 10_000
    assert shadow["changed_per_label"]["error_class"] == n404
    assert shadow["transitions"]["error_class"][0] == {"old": "client_error", "new": "redirect", "count": n404}
    assert "client" not in shadow["changed_per_label"]  # the pii label is unchanged; never shown in clear anyway


def test_diff_of_identical_policies_changes_nothing():
    """The same policy twice reports no changes and no changed decisions."""
    policy = str(EXAMPLES / "bgl" / "policy.yaml")
    res = subprocess.run([*CLI, "diff", policy, policy, str(DATA / "loghub" / "BGL" / "BGL_2k.labeled.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "no changes" in res.stdout and "0 (0.00%) would get different labels" in res.stdout
