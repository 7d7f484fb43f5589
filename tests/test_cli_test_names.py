"""`activelabel test` and `validate` print user text (test names, paths) as written, never as terminal markup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

POLICY = """apiVersion: activelabel/v1
kind: Policy
metadata: {name: names}
labels:
  l: {type: string}
rules:
  - {id: r, label: l, value: a}
tests:
  - name: "x [/] y"
    event: {}
    expect: {l: b}
  - name: "[bold]kept[/bold] as text"
    event: {}
    expect: {l: a}
"""


def test_a_test_named_with_markup_characters_is_printed_not_crashed_on(tmp_path: Path) -> None:
    """A failing test named `x [/] y` is reported by name (exit 1), not a rich MarkupError traceback."""
    policy = tmp_path / "[red]policy.yaml"
    policy.write_text(POLICY)
    r = subprocess.run([sys.executable, "-m", "activelabel", "test", str(policy)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "COLUMNS": "10000"})
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "x [/] y FAILED" in r.stdout
    assert "____ x [/] y ____" in r.stdout
    assert "[bold]kept[/bold] as text PASSED" in r.stdout
    assert "[red]policy.yaml: 2 tests" in r.stdout
    assert "1 passed, 1 failed" in r.stdout
