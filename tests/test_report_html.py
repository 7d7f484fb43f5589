"""The HTML report opens in a real browser (headless Chromium) and paints its plots."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import orjson
from PIL import Image
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.policy import load_policy
from activelabel.quality.store import DecisionStore

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
_register()


def _store(tmp_path: Path) -> Path:
    db = tmp_path / "d.db"
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    with DecisionStore(db, policy=load_policy(FIXTURES / "policy.yaml")) as store:
        store.record_many(((r["id"], r["event"], r["decision"]) for r in rows[:6]), ts=1_790_000_000.0)
        store.record_many(((r["id"], r["event"], r["decision"]) for r in rows[6:]), ts=1_790_003_600.0)
        for t in map(orjson.loads, (FIXTURES / "alerts.truth.jsonl").read_bytes().splitlines()):
            store.add_ground_truth(t["id"], t["label"], t["value"])
    return db


def test_html_report_renders_its_plots_in_headless_chromium(tmp_path):
    """Chromium loads the page offline and the screenshot holds the heatmap's blues and the bars' orange."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed for this test (apt-get install chromium)"
    html = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", "--store", str(_store(tmp_path)), "--html", str(html)])
    assert res.exit_code == 0, res.output
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,3000",
                    f"--screenshot={shot}", html.as_uri()], check=True, capture_output=True, timeout=120)
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    heatmap_blue = int(((b > 150) & (r < 120) & (g < 170)).sum())
    bar_orange = int(((r > 220) & (g > 110) & (g < 150) & (b < 60)).sum())  # #f58518
    assert heatmap_blue > 2000 and bar_orange > 2000
