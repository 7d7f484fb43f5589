"""Diffing two policy versions reports what changed, item by item, ignoring formatting."""

from __future__ import annotations

import textwrap
from pathlib import Path

from activelabel.policy import diff_policies, load_policy

BASE = """\
apiVersion: activelabel/v1
kind: Policy
metadata: {name: p, version: "1"}
labels:
  tier: {type: enum, values: [gold, silver]}
  priority: {type: enum, values: [high, low]}
rules:
  - {id: a, label: priority, value: high, when: event.x > 1}
  - {id: b, label: priority, value: low}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_reformatting_is_no_change(tmp_path: Path) -> None:
    """The same policy written differently has an empty diff."""
    old = load_policy(write(tmp_path / "a.yaml", BASE))
    new = load_policy(write(tmp_path / "b.yaml", "# comment\n" + BASE.replace("{id: b, label: priority, value: low}", "{value: low, id: b, label: priority}")))
    diff = diff_policies(old, new)
    assert not diff and diff.changes == ()


def test_added_removed_changed_and_moved_items(tmp_path: Path) -> None:
    """Added, removed and changed rules and labels are listed, and reordered rules are reported as moved."""
    old = load_policy(write(tmp_path / "a.yaml", BASE))
    new_text = (
        BASE.replace('version: "1"', 'version: "2"')
        .replace("values: [gold, silver]", "values: [gold, silver, bronze]")
        .replace("  - {id: a, label: priority, value: high, when: event.x > 1}\n", "")
        + "  - {id: c, label: tier, value: gold}\n"
        + "  - {id: a, label: priority, value: high, when: event.x > 2}\n"
    )
    new = load_policy(write(tmp_path / "b.yaml", new_text))
    diff = diff_policies(old, new)
    kinds = {(c.section, c.name, c.kind) for c in diff.changes}
    assert kinds == {
        ("metadata", "", "changed"),
        ("labels", "tier", "changed"),
        ("rules", "c", "added"),
        ("rules", "a", "changed"),
        ("rules", "a", "moved"),
        ("rules", "b", "moved"),
    }
    (when_change,) = [c for c in diff.changes if c.name == "a" and c.kind == "changed"]
    assert when_change.fields == (("when", "event.x > 1", "event.x > 2"),)
    assert diff.format().startswith(f"{old.version} -> {new.version}: 6 change(s)")
