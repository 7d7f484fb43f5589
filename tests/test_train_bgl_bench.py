"""The BGL active-loop experiment still runs end to end (one small round on the real data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]


def test_bgl_experiment_runs_one_round_and_writes_its_figures(tmp_path):
    """One seed, one round of 30 reviews: the JSON holds per-round scores for rules, model and both."""
    out = tmp_path / "bgl.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "bgl_active_loop.py"), "--seeds", "1", "--rounds", "2",
                    "--budget", "30", "--arms", "uncertainty,random-plain", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = orjson.loads(out.read_bytes())
    rounds = result["summary"]["uncertainty"]
    assert [r["reviewed"] for r in rounds] == [0, 30, 60]
    assert rounds[0]["rules_only.macro_f1"]["mean"] == rounds[0]["rules_plus_model.macro_f1"]["mean"]
    assert rounds[-1]["rules_plus_model.macro_f1"]["mean"] > rounds[0]["rules_only.macro_f1"]["mean"]
    assert result["lines"] == 2000
    assert not any("alert_category" in expr or "raw" in expr for expr in result["features"].values())
