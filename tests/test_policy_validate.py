"""A bad policy is refused with every problem at once, each at file:line:column with rule id and hint."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from activelabel.errors import PolicyError, PolicyIssue
from activelabel.policy import load_policy, load_policy_text

FIXTURES = Path(__file__).parent / "fixtures" / "policies"

HEADER = "apiVersion: activelabel/v1\nkind: Policy\n"

LABELS = """\
labels:
  tier:
    type: enum
    values: [gold, silver]
  priority:
    type: enum
    values: [critical, high, normal, low]
  count:
    type: int
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def issues(path: Path) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    return info.value.issues


def only_issue(path: Path) -> PolicyIssue:
    found = issues(path)
    assert len(found) == 1, "\n".join(i.format() for i in found)
    return found[0]


def rules_policy(tmp_path: Path, rules: str, *, extra: str = "") -> Path:
    """HEADER + LABELS (lines 3-11) + extra + rules, written to p.yaml."""
    return write(tmp_path / "p.yaml", HEADER + LABELS + extra + "rules:\n" + textwrap.dedent(rules))


def test_unknown_label_suggests_the_closest(tmp_path: Path) -> None:
    """A rule setting an unknown label is reported at the label value, with "did you mean"."""
    path = rules_policy(tmp_path, """\
        - id: r1
          label: priorty
          value: critical
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.column) == (str(path), 14, 10)
    assert issue.rule_id == "r1"
    assert "unknown label `priorty`" in issue.message
    assert issue.suggestion == "did you mean `priority`?"


def test_value_outside_the_enum(tmp_path: Path) -> None:
    """A constant that is not one of the enum's values is refused with the closest value suggested."""
    path = rules_policy(tmp_path, """\
        - id: crit
          label: priority
          value: critcal
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (15, 10, "crit")
    assert "not one of label `priority`'s values [critical, high, normal, low]" in issue.message
    assert issue.suggestion == "did you mean `critical`?"


def test_wrong_type_constant(tmp_path: Path) -> None:
    """A string constant for an int label is refused, naming the label's type."""
    path = rules_policy(tmp_path, """\
        - id: n
          label: count
          value: "five"
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.column, issue.rule_id) == (str(path), 15, 10, "n")
    assert "is not an integer (label `count` is int)" in issue.message
    assert issue.suggestion is None


def test_default_must_fit_the_label(tmp_path: Path) -> None:
    """A default outside the enum is refused at the default's position."""
    path = write(tmp_path / "p.yaml", HEADER + "labels:\n  p:\n    type: enum\n    values: [a, b]\n    default: c\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (7, 14)
    assert "default of label `p`" in issue.message


def test_cel_syntax_error_points_at_the_spot_with_a_caret(tmp_path: Path) -> None:
    """A CEL syntax error is reported at its file line and column, with a caret under it."""
    path = rules_policy(tmp_path, """\
        - id: bad-cel
          label: priority
          value: high
          when: event.status >= 500 && (event.path ==
        """)  # fmt: skip
    issue = only_issue(path)
    assert issue.rule_id == "bad-cel"
    assert "CEL syntax error in `when`" in issue.message
    line = "  when: event.status >= 500 && (event.path =="
    assert (issue.line, issue.column) == (16, len(line) + 1)
    assert issue.excerpt == line + "\n" + " " * len(line) + "^"


def test_cel_syntax_error_inside_a_block_scalar(tmp_path: Path) -> None:
    """An error on the second line of a `|` block maps to that line of the file."""
    path = rules_policy(tmp_path, """\
        - id: block
          label: count
          value_expr: |
            event.a +
              (event.b * )
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (17, 18, "block")
    assert issue.excerpt is not None and issue.excerpt.endswith("\n" + " " * 17 + "^")


def test_unknown_identifier_suggests_the_enricher(tmp_path: Path) -> None:
    """An unknown free identifier (a misspelt enricher) is reported with "did you mean"."""
    (tmp_path / "tenants.csv").write_text("id,tier\nt1,gold\n")
    path = rules_policy(
        tmp_path,
        """\
        - id: tier
          label: tier
          value_expr: tenantt.tier
        """,
        extra="enrichers:\n  - {name: tenant, type: lookup, file: tenants.csv, key: event.tenant_id}\n",
    )
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (17, 15, "tier")
    assert "unknown identifier `tenantt`" in issue.message
    assert issue.suggestion == "did you mean `tenant`?"


def test_unknown_label_read_in_an_expression(tmp_path: Path) -> None:
    """Reading `labels.<typo>` is reported at the label name with a suggestion."""
    path = rules_policy(tmp_path, """\
        - id: r
          label: priority
          value: high
          when: labels.teir == "gold"
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (16, 16, "r")
    assert "unknown label `teir`" in issue.message
    assert issue.suggestion == "did you mean `tier`?"


def test_reading_a_label_declared_later_is_refused(tmp_path: Path) -> None:
    """A rule may not read a label declared after its own label."""
    path = rules_policy(tmp_path, """\
        - id: early
          label: tier
          value: gold
          when: labels.priority == "high"
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (16, 16, "early")
    assert "declared after `tier`" in issue.message
    assert issue.suggestion == "declare `priority` before `tier` under `labels:`"


def test_reading_the_label_being_set_is_refused(tmp_path: Path) -> None:
    """A rule may not read the label it sets."""
    path = rules_policy(tmp_path, """\
        - id: self
          label: tier
          value: gold
          when: labels.tier == "gold"
        """)  # fmt: skip
    issue = only_issue(path)
    assert issue.rule_id == "self" and "the label being set here" in issue.message


def test_duplicate_rule_id(tmp_path: Path) -> None:
    """The second rule with an id already used is reported, pointing back at the first."""
    path = rules_policy(tmp_path, """\
        - id: same
          label: tier
          value: gold
        - id: same
          label: priority
          value: high
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.column, issue.rule_id) == (str(path), 16, 7, "same")
    assert f"duplicate rule id `same` (first at {path}:13:7)" in issue.message
    assert issue.suggestion == "rule ids must be unique; rename one"


def test_bucket_bounds_must_be_strictly_ascending(tmp_path: Path) -> None:
    """A bound that is not greater than the one before it is reported at that bound."""
    path = write(
        tmp_path / "p.yaml",
        HEADER + "labels:\n  band:\n    type: bucket\n    from: event.ms\n    bounds: [10, 100, 100]\n",
    )
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.column, issue.rule_id) == (str(path), 7, 23, None)
    assert "strictly ascending: 100 after 100" in issue.message
    assert issue.suggestion == "sort the bounds and remove duplicates"


def test_bucket_bounds_must_not_be_empty(tmp_path: Path) -> None:
    """An empty `bounds` list is refused."""
    path = write(tmp_path / "p.yaml", HEADER + "labels:\n  band:\n    type: bucket\n    from: event.ms\n    bounds: []\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (7, 13)
    assert "non-empty list" in issue.message


def test_bucket_labels_cannot_have_rules(tmp_path: Path) -> None:
    """A bucket label gets its value from `from`, so a rule setting it is refused."""
    path = rules_policy(
        tmp_path,
        """\
        - id: b
          label: band
          value: "<10"
        """,
        extra="  band: {type: bucket, from: event.ms, bounds: [10]}\n",
    )
    issue = only_issue(path)
    assert issue.rule_id == "b" and "bucket label `band`" in issue.message


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    """An unknown key anywhere is reported at the key with "did you mean"."""
    path = rules_policy(tmp_path, """\
        - id: r
          label: tier
          value: gold
          confidnce: 0.5
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (16, 3, "r")
    assert "unknown key `confidnce`" in issue.message
    assert issue.suggestion == "did you mean `confidence`?"


def test_missing_enricher_file_names_the_enricher(tmp_path: Path) -> None:
    """A lookup file that does not exist is reported at `file:`, naming the enricher."""
    path = write(
        tmp_path / "p.yaml",
        HEADER + "enrichers:\n  - name: tenant\n    type: lookup\n    file: nope.csv\n    key: event.t\n",
    )
    issue = only_issue(path)
    assert (issue.file, issue.line, issue.column, issue.rule_id) == (str(path), 6, 11, None)
    assert issue.message.startswith("enricher `tenant`: file `nope.csv` not found")
    assert issue.suggestion == "paths are relative to the policy file"


def test_enricher_name_may_not_shadow_builtins(tmp_path: Path) -> None:
    """An enricher called `event`, `labels` or `now` is refused."""
    (tmp_path / "t.csv").write_text("k,v\n1,2\n")
    path = write(tmp_path / "p.yaml", HEADER + "enrichers:\n  - {name: event, type: lookup, file: t.csv, key: event.k}\n")
    issue = only_issue(path)
    assert "clashes with the built-in `event`" in issue.message


def test_include_cycle_is_refused() -> None:
    """Files that include each other are refused at the include closing the cycle."""
    path = FIXTURES / "bad" / "include-cycle-a.yaml"
    issue = only_issue(path)
    assert issue.file.endswith("include-cycle-b.yaml") and (issue.line, issue.column) == (1, 11)
    assert issue.message.startswith("include cycle: ")
    assert "include-cycle-a.yaml -> " in issue.message
    assert issue.suggestion == "remove one of the includes"


def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    """A problem inside an included file is reported with that file's name and line."""
    write(tmp_path / "rules" / "more.yaml", "rules:\n  - id: x\n    label: priority\n    value: hihg\n")
    path = write(tmp_path / "p.yaml", HEADER + "include: [rules/more.yaml]\n" + LABELS)
    issue = only_issue(path)
    assert issue.file == str(tmp_path / "rules" / "more.yaml")
    assert (issue.line, issue.column, issue.rule_id) == (4, 12, "x")
    assert issue.suggestion == "did you mean `high`?"


def test_missing_include_is_reported_at_the_include(tmp_path: Path) -> None:
    """An include that does not exist is reported at its list item."""
    path = write(tmp_path / "p.yaml", HEADER + "include:\n  - gone.yaml\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (4, 5) and "cannot include `gone.yaml`" in issue.message


def test_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    """Broken YAML becomes one issue at the position the parser stopped."""
    path = write(tmp_path / "p.yaml", HEADER + "labels:\n  a: {type: bool\n  b: 1\n")
    issue = only_issue(path)
    assert issue.message.startswith("invalid YAML") and issue.line == 5


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    """A key written twice in one mapping is refused at the second one."""
    path = write(tmp_path / "p.yaml", HEADER + "labels:\n  a: {type: bool}\n  a: {type: int}\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (5, 3) and "duplicate key `a`" in issue.message


def test_wrong_api_version_and_missing_kind(tmp_path: Path) -> None:
    """The policy header must name `activelabel/v1` and kind `Policy`."""
    path = write(tmp_path / "p.yaml", "apiVersion: activelabel/v2\nlabels: {}\n")
    found = issues(path)
    assert [(i.line, i.column) for i in found] == [(1, 1), (1, 13)]
    assert "missing `kind`" in found[0].message and "unsupported apiVersion" in found[1].message


def test_value_and_value_expr_are_exclusive(tmp_path: Path) -> None:
    """A rule needs exactly one of `value` and `value_expr`."""
    path = rules_policy(tmp_path, """\
        - id: both
          label: tier
          value: gold
          value_expr: '"gold"'
        - id: neither
          label: tier
        """)  # fmt: skip
    found = issues(path)
    assert [(i.rule_id, i.line) for i in found] == [("both", 16), ("neither", 17)]


def test_test_expectations_are_checked(tmp_path: Path) -> None:
    """A policy test expecting an unknown label or a value outside its type is refused."""
    path = write(
        tmp_path / "p.yaml",
        HEADER + LABELS + "tests:\n  - name: t\n    event: {}\n    expect: {priorty: high, count: many}\n",
    )
    found = issues(path)
    assert [(i.line, i.column) for i in found] == [(15, 14), (15, 36)]
    assert found[0].suggestion == "did you mean `priority`?"


def test_model_shape_is_checked(tmp_path: Path) -> None:
    """A model's label, type, confidence bound and fallback value are checked."""
    path = write(
        tmp_path / "p.yaml",
        HEADER
        + LABELS
        + "models:\n  - {name: m, label: priorty, type: sklern, path: m.skops, min_confidence: 2}\n"
        + "  - {name: r, label: priority, type: river, path: r.pkl, on_error: urgent}\n",
    )
    messages = [i.message for i in issues(path)]
    assert any("`type` of model `m` must be one of" in m for m in messages)
    assert any("`min_confidence` of model `m` must be between 0 and 1" in m for m in messages)
    assert any("`on_error` of model `r`" in m for m in messages)


def test_all_errors_are_reported_at_once() -> None:
    """A policy with several mistakes lists every one of them, in file order."""
    path = FIXTURES / "bad" / "many-errors.yaml"
    found = issues(path)
    assert [(i.line, i.rule_id) for i in found] == [
        (11, None),  # bounds not ascending
        (14, "r1"),  # unknown label priorty
        (18, "r2"),  # value outside the enum
        (19, "r2"),  # duplicate rule id
        (22, "r2"),  # CEL syntax error
        (23, "r2"),  # unknown key confidnce
    ]
    assert all(i.file == str(path) for i in found)
    text = str(PolicyError(issues=found))
    assert text.startswith("policy refused: 6 errors")


def test_policy_text_errors_use_the_given_filename(tmp_path: Path) -> None:
    """`load_policy_text` reports issues under the filename it was given."""
    with pytest.raises(PolicyError) as info:
        load_policy_text(HEADER + "labels:\n  a: {type: boolean}\n", filename="inline.yaml", base_dir=tmp_path)
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.column) == ("inline.yaml", 4, 13)
    assert issue.suggestion == "did you mean `bool`?"


def test_fixture_copy_reports_the_copied_path(tmp_path: Path) -> None:
    """Issues name the path the policy was loaded from."""
    shutil.copy(FIXTURES / "bad" / "many-errors.yaml", tmp_path / "x.yaml")
    assert {i.file for i in issues(tmp_path / "x.yaml")} == {str(tmp_path / "x.yaml")}


def test_unknown_cel_function_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt CEL method is caught at load time, at its position, with "did you mean"."""
    path = rules_policy(tmp_path, """\
        - id: m
          label: tier
          value: gold
          when: event.path.startswith("/pay")
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (16, 20, "m")
    assert "no such method 'startswith'" in issue.message
    assert issue.suggestion == "did you mean `startsWith`?"


def test_invalid_regular_expression_is_refused(tmp_path: Path) -> None:
    """A constant `matches` pattern that is not valid RE2 is reported at the pattern."""
    path = rules_policy(tmp_path, """\
        - id: rx
          label: tier
          value: gold
          when: event.ua.matches("(bot")
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.rule_id) == (16, 26, "rx")
    assert issue.message.startswith("invalid regular expression in `when`")


def test_cel_error_position_accounts_for_yaml_escapes(tmp_path: Path) -> None:
    """In a double-quoted expression, escaped quotes do not shift the reported column."""
    path = rules_policy(tmp_path, """\
        - id: dq
          label: tier
          value: gold
          when: "event.path == \\"/pay\\" && )"
        """)  # fmt: skip
    issue = only_issue(path)
    line = '  when: "event.path == \\"/pay\\" && )"'
    assert (issue.line, issue.column) == (16, line.index(")") + 1)


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    """Aliases that expand to an enormous document are refused instead of expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    path = write(tmp_path / "p.yaml", HEADER + "\n".join(lines) + "\n")
    issue = only_issue(path)
    assert issue.message.startswith("policy too large")


def test_deeply_nested_yaml_is_refused(tmp_path: Path) -> None:
    """A pathologically nested document is refused with an issue, not a crash."""
    path = write(tmp_path / "p.yaml", HEADER + "tests: " + "[" * 5000 + "]" * 5000 + "\n")
    issue = only_issue(path)
    assert "nested too deeply" in issue.message


def test_quoted_number_for_a_numeric_label_gets_a_hint(tmp_path: Path) -> None:
    """A quoted number for an int label is refused with a hint to drop the quotes."""
    path = rules_policy(tmp_path, """\
        - id: q
          label: count
          value: "5"
        """)  # fmt: skip
    issue = only_issue(path)
    assert (issue.rule_id, issue.suggestion) == ("q", "write the number without quotes: 5")


def test_include_pattern_matching_nothing_is_refused(tmp_path: Path) -> None:
    """A glob include that matches no file is an error at the include."""
    path = write(tmp_path / "p.yaml", HEADER + "include: [rules/*.yaml]\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (3, 11) and "no file matches include pattern `rules/*.yaml`" in issue.message


def test_label_name_may_not_be_a_cel_reserved_word(tmp_path: Path) -> None:
    """A label called `in` could never be read as `labels.in`, so it is refused."""
    path = write(tmp_path / "p.yaml", HEADER + "labels:\n  in: {type: bool}\n")
    issue = only_issue(path)
    assert (issue.line, issue.column) == (4, 3) and "CEL reserved word" in issue.message


def test_duplicate_test_names_are_refused(tmp_path: Path) -> None:
    """Two policy tests with the same name are refused, since results are reported by name."""
    path = write(
        tmp_path / "p.yaml",
        HEADER + LABELS + "tests:\n  - {name: t, event: {}, expect: {}}\n  - {name: t, event: {}, expect: {}}\n",
    )
    issue = only_issue(path)
    assert (issue.line, issue.column) == (14, 5) and f"duplicate test name `t` (first at {path}:13:5)" in issue.message


def test_missing_or_unreadable_policy_file(tmp_path: Path) -> None:
    """A policy path that does not exist, or is not UTF-8 text, is one issue naming the file."""
    missing = issues(tmp_path / "nope.yaml")
    assert len(missing) == 1 and missing[0].file == str(tmp_path / "nope.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"apiVersion: activelabel/v1\nkind: Policy\n# caf\xe9\n")
    (bad,) = issues(tmp_path / "latin1.yaml")
    assert "not UTF-8" in bad.message


def test_mutated_policies_are_loaded_or_refused_never_crash() -> None:
    """Randomly damaged policies either load or raise PolicyError whose issues all format."""
    import random

    from activelabel.policy import Policy

    edge = FIXTURES / "edge"
    sources = [(edge / "policy.yaml").read_text(), (FIXTURES / "bad" / "many-errors.yaml").read_text()]
    tokens = [":", "-", "[", "]", "{", "}", "\n", "  ", "'", '"', "#", "&a", "*a", "<<", "null", "1e3", "!!binary",
              "? ", "|", ">", "\t", "labels", "rules", "when", "(", "&&", "labels.", "~", ".nan", "2020-01-01"]  # fmt: skip
    rng = random.Random(20261127)
    for _ in range(300):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                text = text[:i] + rng.choice(tokens) + text[i:]
            else:
                text = text[:i] + text[i + rng.randint(1, 10) :]
        try:
            assert isinstance(load_policy_text(text, filename="f.yaml", base_dir=edge), Policy)
        except PolicyError as exc:
            assert exc.issues and all(i.format() for i in exc.issues)
