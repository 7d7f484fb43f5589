"""cel-go's parser limits (100,000 code points, nesting 250) refuse huge expressions fast; long chains under them work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from activelabel import Labeler, cel
from activelabel.errors import CELSyntaxError, PolicyError
from activelabel.policy import load_policy

HEAD = "apiVersion: activelabel/v1\nkind: Policy\nmetadata: {name: chain}\nlabels:\n  hit: {type: bool}\nrules:\n"


def _chain(term: str, n: int) -> str:
    return " && ".join([term] * n)


def _policy(tmp_path, when: str):
    file = tmp_path / "policy.yaml"
    file.write_text(HEAD + f"  - id: long\n    label: hit\n    value: true\n    when: {when}\n")
    return file


def test_an_expression_over_100000_code_points_is_a_syntax_error_naming_the_limit():
    """Text one code point over the limit is refused, saying its length, the limit and what to do; code points, not bytes, count."""
    text = "true" + " " * (100_000 - 4)
    assert cel.compile(text).evaluate({}) is True
    with pytest.raises(CELSyntaxError) as err:
        cel.parse(text + " ")
    assert "100,001 characters" in err.value.message and "limit of 100,000" in err.value.message
    assert "split it" in err.value.message
    wide = '"' + "é" * 99_998 + '"'  # 100,000 code points, ~200,000 UTF-8 bytes: allowed
    assert cel.compile(wide).evaluate({}) == "é" * 99_998


def test_nesting_past_250_is_refused_and_249_levels_evaluate():
    """Parentheses nested 251 deep are a syntax error about nesting; 249 deep evaluate."""
    assert cel.compile("(" * 249 + "1" + ")" * 249 + " == 1").evaluate({}) is True
    with pytest.raises(CELSyntaxError, match="nests too deeply"):
        cel.parse("(" * 251 + "1" + ")" * 251)


def test_a_policy_rule_over_the_size_limit_is_a_policy_error_at_its_line(tmp_path):
    """The hostile 20,000-term `contains` chain (~600 KB) is refused at the rule's `when` line, quickly, with the limit named."""
    file = _policy(tmp_path, _chain('event.content.contains("x")', 20_000))
    with pytest.raises(PolicyError) as err:
        load_policy(file)
    (issue,) = err.value.issues
    assert issue.line == 10 and issue.rule_id == "long"
    assert "limit of 100,000" in issue.message
    r = subprocess.run([sys.executable, "-m", "activelabel", "validate", str(file)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "policy.yaml:10:" in r.stderr and "Traceback" not in r.stderr


def test_a_long_chain_under_the_limit_validates_and_labels(tmp_path):
    """A 3,000-term `&&` chain (~93,000 characters) loads, compiles and labels: a long rule is allowed, not just refused."""
    file = _policy(tmp_path, _chain('event.content.contains("x")', 3_000))
    labeler = Labeler(load_policy(file))
    assert labeler.label({"content": "xyz"}).labels["hit"] is True
    assert "hit" not in labeler.label({"content": "abc"}).labels
    ors = " || ".join(["false"] * 16_000)  # 16,000 terms, 143,995 characters: over the limit
    with pytest.raises(CELSyntaxError, match="limit of 100,000"):
        cel.parse(ors)
    assert cel.compile(" || ".join(["false"] * 11_000) + " || true").evaluate({}) is True
