"""A policy that loads can still carry warnings about logic that looks unintended."""

from __future__ import annotations

import textwrap
from pathlib import Path

from activelabel.policy import load_policy

HEADER = "apiVersion: activelabel/v1\nkind: Policy\n"


def warnings_of(tmp_path: Path, body: str) -> list[tuple[int, str | None, str]]:
    (tmp_path / "t.csv").write_text("id,tier\nt1,gold\n")
    path = tmp_path / "p.yaml"
    path.write_text(HEADER + textwrap.dedent(body))
    return [(w.line, w.rule_id, w.message) for w in load_policy(path).warnings]


def test_rule_after_an_unconditional_first_match_rule_never_applies(tmp_path: Path) -> None:
    """Under first_match, a rule after one that always sets the label is reported as dead."""
    found = warnings_of(tmp_path, """\
        labels:
          p: {type: enum, values: [a, b]}
        rules:
          - {id: catch-all, label: p, value: a}
          - {id: late, label: p, value: b, when: event.x > 1}
        """)  # fmt: skip
    assert found == [(7, "late", "rule `late` never applies: rule `catch-all` comes first and always sets `p`")]


def test_other_resolve_modes_do_not_shadow(tmp_path: Path) -> None:
    """With vote or max_confidence every rule counts, so nothing is reported."""
    found = warnings_of(tmp_path, """\
        labels:
          p: {type: enum, values: [a, b], resolve: vote}
        rules:
          - {id: catch-all, label: p, value: a}
          - {id: late, label: p, value: b, when: event.x > 1}
        """)  # fmt: skip
    assert found == []


def test_label_nothing_sets_and_unused_default(tmp_path: Path) -> None:
    """A label with no rule, model or default, and a default no event can reach, are reported."""
    found = warnings_of(tmp_path, """\
        labels:
          orphan: {type: string}
          p: {type: enum, values: [a, b], default: b}
          band: {type: bucket, from: event.ms, bounds: [10]}
        rules:
          - {id: always, label: p, value: a, when: "true"}
        """)  # fmt: skip
    assert found == [
        (4, None, "label `orphan` is never set: no rule, model or default"),
        (5, None, "the default of `p` is never used: rule `always` always sets it"),
    ]


def test_enricher_no_expression_reads(tmp_path: Path) -> None:
    """An enricher whose name no expression uses is reported."""
    found = warnings_of(tmp_path, """\
        enrichers:
          - {name: tenant, type: lookup, file: t.csv, key: event.t}
        labels:
          p: {type: bool, default: false}
        """)  # fmt: skip
    assert found == [(4, None, "enricher `tenant` is never read by any expression")]


def test_an_unread_novelty_enricher_says_what_it_is_for(tmp_path: Path) -> None:
    """The loop's novelty enricher, unread, is reported with the rule that would use it."""
    from activelabel.quality.novelty import NoveltyIndex

    NoveltyIndex.build([{"msg": "PacketResponder 1 for block blk_2 terminating"}], ["msg"]).save(tmp_path / "i.json")
    found = warnings_of(tmp_path, """\
        enrichers:
          - {name: novelty, type: novelty, file: i.json, key: event.content}
        labels:
          p: {type: bool, default: false}
        """)  # fmt: skip
    assert len(found) == 1 and found[0][:2] == (4, None)
    assert found[0][2].startswith("enricher `novelty` is never read by any expression")
    assert "when: novelty.novel" in found[0][2]
