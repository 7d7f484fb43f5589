"""`activelabel diff`: what changes between two policy versions, in the file and on real data.

The shadow check before a rollout: label the same records with the running
policy and the candidate, and show per label how many decisions would change
and how (the seed's F2, mislabeling, caught before it ships).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from activelabel.cli._common import err, fail, open_labeler, out
from activelabel.cli.main import app
from activelabel.governance.sensitivity import is_sensitive
from activelabel.sources import JsonlSource, ReadLimits
from activelabel.sources.jsonl import BadRecord

_MISSING_TEXT = "(unset)"


def shadow_diff(old: Any, new: Any, inputs: list[str], limits: ReadLimits = ReadLimits()) -> dict[str, Any]:
    """Label every record of ``inputs`` with both labelers; count changes per label and transitions."""
    records = skipped = changed_records = 0
    changed: Counter[str] = Counter()
    transitions: dict[str, Counter[tuple[str, str]]] = {}
    examples: list[dict[str, Any]] = []
    hidden = {n for labeler in (old, new) for n, s in labeler.policy.labels.items() if is_sensitive(s.sensitivity)}
    for item in JsonlSource(inputs, limits):
        if isinstance(item, BadRecord):
            skipped += 1
            continue
        records += 1
        a = old.labels_only(item.event)
        b = new.labels_only(item.event)
        if a == b:
            continue
        changed_records += 1
        diff_here = {}
        for name in dict.fromkeys([*a, *b]):
            va, vb = a.get(name, _MISSING_TEXT), b.get(name, _MISSING_TEXT)
            if va != vb or va.__class__ is not vb.__class__:
                changed[name] += 1
                shown = ("‹changed›", "‹changed›") if name in hidden else (_text(va), _text(vb))
                transitions.setdefault(name, Counter())[shown] += 1
                diff_here[name] = list(shown)
        if len(examples) < 20:
            examples.append({"source": item.source, "line": item.line_no, "changes": diff_here})
    return {
        "records": records,
        "skipped_bad_lines": skipped,
        "changed_records": changed_records,
        "changed_per_label": dict(changed),
        "transitions": {k: [{"old": o, "new": n, "count": c} for (o, n), c in v.most_common()] for k, v in transitions.items()},
        "examples": examples,
    }


# Fields of a changed item that say *how* something is decided, not a value it takes.
_NOT_VALUES = frozenset({"position", "when", "value_expr", "sensitivity", "type", "protect", "owner", "description",
                         "resolve", "max_cardinality", "priority", "confidence", "label", "from", "bounds"})


def hide_sensitive_values(structural: Any, old: Any, new: Any) -> Any:
    """The structural diff with every value a pii/secret label takes (a rule's constant, a default, a test's
    expectation) shown as ‹changed›, so a diff pasted into a review or a CI log quotes none."""
    from dataclasses import replace

    hidden = {n for labeler in (old, new) for n, s in labeler.policy.labels.items() if is_sensitive(s.sensitivity)}
    if not hidden:
        return structural
    rule_label = {str(r.id): r.label for labeler in (old, new) for r in labeler.policy.rules}

    def sensitive(change: Any) -> bool:
        if change.section == "labels":
            return bool(change.name in hidden)
        if change.section == "rules":
            return bool(rule_label.get(change.name) in hidden)
        return bool(change.section == "tests")  # a test's expectations may name any label's value

    changes = tuple(
        replace(c, fields=tuple((f, o, n) if f in _NOT_VALUES else (f, "‹changed›", "‹changed›") for f, o, n in c.fields))
        if sensitive(c) else c
        for c in structural.changes
    )
    return replace(structural, changes=changes)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


@app.command()
def diff(
    old_policy: Annotated[Path, typer.Argument(help="The running policy.")],
    new_policy: Annotated[Path, typer.Argument(help="The candidate policy.")],
    inputs: Annotated[list[str] | None, typer.Argument(help="JSONL records to label with both (shadow run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    top: Annotated[int, typer.Option("--top", help="Transitions to show per label.")] = 5,
) -> None:
    """Compare two policy versions: changed labels and rules, and (with data) which decisions would change."""
    usage = "usage: activelabel diff OLD.yaml NEW.yaml [DATA.jsonl]"
    old = open_labeler(old_policy, hint=f"the running policy; {usage}")
    new = open_labeler(new_policy, hint=f"the candidate policy; {usage}")
    from activelabel.policy import diff_policies

    structural = hide_sensitive_values(diff_policies(old.policy, new.policy), old, new)
    result: dict[str, Any] = {
        "old_version": old.version,
        "new_version": new.version,
        "changes": [c.format() for c in structural.changes],
    }
    if inputs:
        for path in inputs:
            if path != "-" and not Path(path).exists():
                fail(f"input {path} does not exist")
        result["shadow"] = shadow_diff(old, new, inputs)
    if as_json:
        out.print_json(orjson.dumps(result).decode())
        return
    out.print(structural.format(), highlight=False, markup=False)
    shadow = result.get("shadow")
    if shadow is None:
        err.print("pass JSONL files after the two policies to see which decisions would change", highlight=False)
        return
    n = max(shadow["records"], 1)
    out.print(
        f"\nshadow run: {shadow['records']:,} records, {shadow['changed_records']:,} "
        f"({shadow['changed_records'] / n:.2%}) would get different labels",
        highlight=False,
    )
    if not shadow["changed_per_label"]:
        return
    table = Table(title="changes per label", title_justify="left")
    for col in ("label", "changed", "share", "old → new (count)"):
        table.add_column(col, overflow="fold")
    for name, count in sorted(shadow["changed_per_label"].items(), key=lambda kv: -kv[1]):
        moves = ", ".join(f"{t['old']} → {t['new']} ({t['count']:,})" for t in shadow["transitions"][name][:top])
        table.add_row(name, f"{count:,}", f"{count / n:.2%}", moves)
    out.print(table)
