"""CEL's evaluation budget: costly expressions are refused at load time, runaway evaluations become rule errors."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelabel import Labeler, cel, load_policy
from activelabel.cel._budget import MAX_ITERATIONS, MAX_SIZE
from activelabel.errors import CELEvalError, CELSyntaxError

HEADER = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: budget}
labels:
  l: {type: string}
  hit: {type: bool, default: false}
rules:
"""


def nested_replace(n: int) -> str:
    return "'a'" + ".replace('a','aa')" * n


def test_doubling_replace_27_times_is_refused_by_validate_with_file_line_and_rule_id(write_policy) -> None:
    """The 27-fold `'a'.replace('a','aa')` (a 134-million-character string) is a policy error, not a 24 s wait."""
    path = write_policy(HEADER + f'  - id: boom\n    label: l\n    value_expr: "{nested_replace(27)}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "activelabel", "validate", str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "10000"},
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "policy.yaml:10:" in out
    assert "rule boom" in out
    assert "estimated evaluation cost" in out
    assert "Traceback" not in out


def test_growth_under_the_estimate_still_stops_at_the_size_limit() -> None:
    """A string that would pass 1 MiB is a CELEvalError before it is built, also when it is a constant."""
    prog = cel.compile(nested_replace(21))
    with pytest.raises(CELEvalError, match="exceeds the limit"):
        prog.evaluate({})
    assert len(cel.compile(nested_replace(10)).evaluate({})) == 1024


def test_constant_folded_growth_is_a_counted_rule_error(write_policy) -> None:
    """The engine folds constants through the same limits: the rule errors (counted) and the label stays unset."""
    lab = Labeler(load_policy(write_policy(HEADER + f'  - id: grow\n    label: l\n    value_expr: "{nested_replace(21)}"\n')))
    assert "l" not in lab.label({}).labels
    assert lab.stats().rule_errors["grow"] == 1


def test_nested_exists_on_a_large_event_is_a_rule_error_not_a_stall(write_policy) -> None:
    """A nested `exists` over a 100 KB event's list stops at the step limit and counts a rule error."""
    lab = Labeler(load_policy(write_policy(HEADER + """  - id: pairs
    label: hit
    value: true
    when: "event.items.exists(x, event.items.exists(y, y.k == x.k + 'z'))"
""")))
    event = {"items": [{"k": f"value-{i:05d}"} for i in range(6000)]}
    assert len(orjson.dumps(event)) > 100_000
    assert lab.label(event).labels == {"hit": False}
    assert lab.label_batch([event])[0].labels == {"hit": False}
    assert lab.stats().rule_errors["pairs"] == 2
    # a small event is still evaluated exactly
    assert lab.label({"items": [{"k": "a"}, {"k": "az"}]}).labels == {"hit": True}


def test_a_single_macro_over_more_than_the_step_limit_errors() -> None:
    """`exists` over a list longer than the step limit is an error rather than an unbounded loop."""
    prog = cel.compile("xs.exists(x, x < 0)")
    with pytest.raises(CELEvalError, match="comprehension steps"):
        prog.evaluate({"xs": list(range(MAX_ITERATIONS + 1))})
    assert prog.evaluate({"xs": list(range(1000))}) is False


def test_each_evaluation_gets_its_own_step_allowance() -> None:
    """The step budget is per evaluation: many evaluations in a row never run out."""
    prog = cel.compile("xs.all(x, x >= 0)")
    xs = list(range(MAX_ITERATIONS // 2))
    for _ in range(5):
        assert prog.evaluate({"xs": xs}) is True


def test_an_integer_literal_over_4300_digits_is_a_syntax_error() -> None:
    """Python's int() limit does not leak out as a ValueError; the literal is refused with a position."""
    with pytest.raises(CELSyntaxError, match="out of range") as info:
        cel.parse("event.n == " + "7" * 5000)
    assert (info.value.line, info.value.column) == (1, 12)
    with pytest.raises(CELSyntaxError):
        cel.parse("0x" + "f" * 5000)


def test_ordinary_nested_macros_are_accepted_and_exact(write_policy) -> None:
    """Nested macros over event lists of unknown size stay within the estimate and give CEL's result."""
    lab = Labeler(load_policy(write_policy(HEADER + """  - id: nested
    label: hit
    value: true
    when: "event.spans.exists(s, s.events.exists(e, e.name == 'exception'))"
""")))
    assert lab.label({"spans": [{"events": [{"name": "x"}]}, {"events": [{"name": "exception"}]}]}).labels == {"hit": True}
    assert lab.label({"spans": [{"events": []}]}).labels == {"hit": False}


# ---- property: no expression built from growing operations escapes the limits ----

_GROW = st.sampled_from([
    ".replace('a','aa')", ".replace('','ab')", " + 'ab'", ".replace('a', 'aaaaaaaaaa')", ".lowerAscii()",
])
_LIST = st.sampled_from([" + [1, 2]", ".map(x, x)", ".filter(x, true)"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_GROW, min_size=1, max_size=40), st.booleans())
def test_string_growth_is_refused_or_bounded(ops: list[str], on_event: bool) -> None:
    """Any chain of growing string operations is refused at compile time, or evaluates to at most MAX_SIZE, or errors."""
    expr = ("event.s" if on_event else "'a'") + "".join(ops)
    try:
        prog = cel.compile(expr, names=["event"])
    except CELSyntaxError as exc:
        assert "estimated evaluation cost" in exc.message
        return
    try:
        out = prog.evaluate({"event": {"s": "a" * 1000}})
    except CELEvalError as exc:
        assert "exceeds the limit" in str(exc)
        return
    assert len(out) <= MAX_SIZE


@settings(max_examples=100, deadline=None)
@given(st.lists(_LIST, min_size=1, max_size=12), st.integers(min_value=1, max_value=4))
def test_nested_comprehensions_are_refused_or_bounded(ops: list[str], depth: int) -> None:
    """Comprehensions nested to any depth over any list are refused, or finish within the step and size limits."""
    expr = f"x{depth - 1} > 0"
    for d in reversed(range(depth)):
        expr = f"(xs{''.join(ops)}).exists(x{d}, {expr})"
    try:
        prog = cel.compile(expr, names=["xs"])
    except CELSyntaxError as exc:
        assert "estimated evaluation cost" in exc.message
        return
    try:
        out = prog.evaluate({"xs": list(range(-400, 0))})
    except CELEvalError as exc:
        assert "limit" in str(exc)
        return
    assert out is (" + [1, 2]" in ops)
