"""Behaviour of activelabel.cel beyond the conformance suite: positions, errors, semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activelabel import cel
from activelabel.cel import Reference, UInt
from activelabel.errors import CELEvalError, CELSyntaxError


def ev(expr: str, **bindings: object) -> object:
    return cel.compile(expr).evaluate(bindings)


# ---- syntax errors and positions ---------------------------------------------

def test_syntax_error_points_at_missing_operand() -> None:
    """`1 +` fails at the end of the text with a caret under the spot."""
    with pytest.raises(CELSyntaxError, match="operand is missing") as info:
        cel.parse("1 +")
    err = info.value
    assert (err.line, err.column) == (1, 4)
    assert err.excerpt == "1 +\n   ^"


def test_syntax_error_on_second_line_reports_line_and_column() -> None:
    """Positions are 1-based line and column within a multi-line expression."""
    with pytest.raises(CELSyntaxError) as info:
        cel.parse("event.a == 1 &&\n  event.b == )")
    assert (info.value.line, info.value.column) == (2, 14)
    assert info.value.excerpt.splitlines() == ["  event.b == )", "             ^"]


def test_single_equals_suggests_double_equals() -> None:
    """A lone '=' is refused with a hint to use '=='."""
    with pytest.raises(CELSyntaxError, match="did you mean '=='"):
        cel.parse("event.status = 500")


def test_unbalanced_parenthesis_is_a_syntax_error() -> None:
    """A missing ')' is reported, not silently accepted."""
    with pytest.raises(CELSyntaxError, match=r"expected '\)'"):
        cel.parse("(1 + 2")


def test_reserved_word_cannot_be_an_identifier() -> None:
    """Reserved words such as `while` are refused as identifiers but allowed as field names."""
    with pytest.raises(CELSyntaxError, match="reserved"):
        cel.parse("while")
    assert ev("{'while': 1}.while") == 1


def test_deep_nesting_gives_a_clear_error_not_recursion_error() -> None:
    """Nesting beyond the depth limit raises CELSyntaxError rather than Python's RecursionError."""
    with pytest.raises(CELSyntaxError, match="nests too deeply"):
        cel.parse("(" * 400 + "1" + ")" * 400)
    assert ev("(" * 100 + "1" + ")" * 100) == 1


def test_int_literal_out_of_range_is_a_syntax_error() -> None:
    """9223372036854775808 does not fit int64, but its negation does."""
    with pytest.raises(CELSyntaxError, match="out of the int64 range"):
        cel.parse("9223372036854775808")
    assert ev("-9223372036854775808") == -(2**63)


def test_node_locations_are_line_and_column() -> None:
    """Ast.location maps a node's offset to its 1-based line and column."""
    ast = cel.parse("a &&\n  b.c")
    rhs = ast.root.args[1]  # type: ignore[attr-defined]
    assert ast.location(rhs.operand) == (2, 3)


# ---- references() --------------------------------------------------------------

def test_references_report_select_chains_with_positions() -> None:
    """Each free select chain is reported once, with the position of its root identifier."""
    ast = cel.parse('labels.priorty == "x" &&\n  has(event.http.status) && tenant["tier"] == "gold"')
    assert cel.references(ast) == [
        Reference(("labels", "priorty"), 1, 1),
        Reference(("event", "http", "status"), 2, 7),
        Reference(("tenant", "tier"), 2, 29),
    ]


def test_references_skip_macro_iteration_variables() -> None:
    """Inside a macro the iteration variable is bound; other names stay free."""
    ast = cel.parse("event.items.exists(i, i.kind == labels.kind)")
    assert [r.path for r in cel.references(ast)] == [("event", "items"), ("labels", "kind")]


def test_method_calls_end_the_reference_path() -> None:
    """`event.path.startsWith(...)` references ("event", "path"), not the method name."""
    assert [r.path for r in cel.references(cel.parse("event.path.startsWith('/a')"))] == [("event", "path")]


def test_compile_with_names_refuses_undeclared_identifier_and_lists_scope() -> None:
    """With `names`, an unknown root identifier is a compile-time error naming what is in scope."""
    with pytest.raises(CELSyntaxError, match=r"undeclared reference to 'evnt' \(in scope: event, labels\).*'event'"):
        cel.compile("evnt.status == 1", names=["event", "labels"])
    assert cel.compile("event.status == 1 && type(1) == int", names=["event"]).evaluate({"event": {"status": 1}})


def test_compile_with_names_refuses_unknown_function() -> None:
    """With `names`, calling a function CEL does not define is a compile-time error."""
    with pytest.raises(CELSyntaxError, match="no such function 'frobnicate'"):
        cel.compile("frobnicate(event)", names=["event"])


# ---- values and equality -----------------------------------------------------------

def test_bool_is_not_a_number() -> None:
    """CEL keeps bool apart from int although Python's bool is an int."""
    assert ev("x == 1", x=True) is False
    assert ev("x in [1, 2]", x=True) is False
    with pytest.raises(CELEvalError, match="no such overload"):
        ev("x < 2", x=True)


def test_numbers_compare_across_types() -> None:
    """int, uint and double compare by numeric value, also inside lists and map keys."""
    assert ev("1 == 1.0") is True
    assert ev("[1] == [1.0]") is True
    assert ev("1u < 2") is True
    assert ev("{1: 'a'}[1u]") == "a"
    assert ev("{1: 'a'}[1.0]") == "a"
    assert ev("x == 2u", x=2) is True


def test_unrelated_types_are_unequal_not_errors() -> None:
    """Equality across unrelated types is false; ordering across them is an error."""
    assert ev("'1' == 1") is False
    assert ev("null == 0") is False
    with pytest.raises(CELEvalError):
        ev("'1' < 1")


def test_nan_is_unequal_to_itself() -> None:
    """NaN compares unequal and unordered, even to itself."""
    assert ev("x == x", x=float("nan")) is False
    assert ev("x < 1.0 || x >= 1.0", x=float("nan")) is False


def test_uint_values_are_cel_uints() -> None:
    """uint literals and conversions produce cel.UInt."""
    v = ev("1u + uint(2)")
    assert v == 3 and isinstance(v, UInt)
    assert ev("type(x)", x=UInt(5)) == ev("uint")


# ---- errors and absorption ------------------------------------------------------------

def test_missing_map_key_is_no_such_key() -> None:
    """Selecting an absent key fails with 'no such key'."""
    with pytest.raises(CELEvalError, match="no such key"):
        ev("event.nope", event={})


def test_logical_operators_absorb_errors_in_either_order() -> None:
    """false && error, error && false, true || error and error || true are all decided."""
    e: dict = {}
    assert ev("false && event.nope", event=e) is False
    assert ev("event.nope && false", event=e) is False
    assert ev("true || event.nope", event=e) is True
    assert ev("event.nope || true", event=e) is True
    with pytest.raises(CELEvalError):
        ev("event.nope || false", event=e)
    with pytest.raises(CELEvalError):
        ev("true && event.nope", event=e)


def test_exists_and_all_absorb_errors_when_decided() -> None:
    """exists() is true if any element matches even when others error; all() false likewise."""
    items = [{"v": 1}, {}, {"v": 5}]
    assert ev("items.exists(i, i.v > 3)", items=items) is True
    assert ev("items.all(i, i.v < 3)", items=items) is False
    with pytest.raises(CELEvalError):
        ev("items.exists(i, i.v > 9)", items=items)


def test_int_overflow_is_an_error() -> None:
    """int64 arithmetic that overflows raises instead of growing like Python ints."""
    with pytest.raises(CELEvalError, match="overflow"):
        ev("9223372036854775807 + 1")
    with pytest.raises(CELEvalError, match="overflow"):
        ev("-9223372036854775808 - 1")
    with pytest.raises(CELEvalError, match="overflow"):
        ev("0u - 1u")


def test_division_truncates_toward_zero_and_modulo_follows_dividend() -> None:
    """-7 / 2 is -3 and -7 % 2 is -1, as in C, unlike Python's floor semantics."""
    assert ev("-7 / 2") == -3
    assert ev("-7 % 2") == -1
    assert ev("7 % -2") == 1


def test_division_and_modulo_by_zero_are_errors() -> None:
    """Integer division or modulo by zero raises; double division gives infinity."""
    with pytest.raises(CELEvalError, match="divide by zero"):
        ev("1 / 0")
    with pytest.raises(CELEvalError, match="modulus by zero"):
        ev("1 % 0")
    assert ev("1.0 / 0.0") == float("inf")


def test_list_index_out_of_range_and_negative_are_errors() -> None:
    """List indexes are checked; negative indexes do not wrap around as in Python."""
    with pytest.raises(CELEvalError, match="out of bounds"):
        ev("[1, 2][2]")
    with pytest.raises(CELEvalError, match="out of bounds"):
        ev("[1, 2][-1]")


def test_has_tests_presence_of_map_key() -> None:
    """has(a.b) is false for an absent key and an error when a itself is missing."""
    assert ev("has(event.a)", event={"a": None}) is True
    assert ev("has(event.b)", event={"a": None}) is False
    with pytest.raises(CELEvalError):
        ev("has(event.x.y)", event={})


# ---- strings, regexes, conversions -------------------------------------------------------

def test_matches_uses_re2_syntax_and_searches() -> None:
    """matches() finds the pattern anywhere, with RE2 syntax (\\d, classes, anchors)."""
    assert ev("'/api/v12/users'.matches('^/api/v\\\\d+/')") is True
    assert ev("matches('abc', 'b')") is True
    assert ev("'a\\nb'.matches('^b$')") is False  # no multi-line mode in RE2 by default
    assert ev("'ünï'.matches('^.n.$')") is True  # '.' is one code point


def test_invalid_regex_is_an_evaluation_error() -> None:
    """A pattern RE2 refuses raises CELEvalError naming the pattern."""
    with pytest.raises(CELEvalError, match="invalid regular expression"):
        ev("'a'.matches('(')")


def test_backreference_patterns_are_refused_like_re2() -> None:
    """RE2 has no backreferences, so patterns needing backtracking cannot be used."""
    with pytest.raises(CELEvalError, match="invalid regular expression"):
        ev("'aa'.matches('(a)\\\\1')")


def test_string_functions_need_strings() -> None:
    """contains/startsWith on a non-string is an error, not Python's list membership."""
    assert ev("'hello'.contains('ell') && 'hello'.startsWith('he') && 'hello'.endsWith('lo')") is True
    with pytest.raises(CELEvalError, match="no such overload"):
        ev("x.contains('a')", x=["a"])


def test_size_counts_code_points() -> None:
    """size() of a string counts Unicode code points; of bytes, bytes."""
    assert ev("size('héllo')") == 5
    assert ev("size(b'h\\xc3\\xa9')") == 3


def test_string_escapes_and_raw_strings() -> None:
    """Escapes (\\x, \\u, \\U, octal) decode; raw strings keep backslashes."""
    assert ev(r"'\x41\u00e9\U0001F600\101'") == "Aé😀A"
    assert ev(r"r'\d+'") == "\\d+"
    assert ev("'''a\nb'''") == "a\nb"


def test_conversions() -> None:
    """int(), uint(), double(), string(), bool(), bytes() convert with range checks."""
    assert ev("int('42') + int(2.9)") == 44
    assert ev("string(1.5) + string(true) + string(7u)") == "1.5true7"
    assert ev("bool('false')") is False
    assert ev("bytes('é')") == "é".encode()
    with pytest.raises(CELEvalError, match="range"):
        ev("int(1e19)")
    with pytest.raises(CELEvalError, match="range"):
        ev("uint(-1)")


def test_type_values() -> None:
    """type() returns type values that compare with the type denotations."""
    assert ev("type(1) == int && type('a') == string && type(null) == null_type && type(int) == type") is True
    assert ev("type([]) == list && type({}) == map") is True


def test_macros_map_filter_exists_one() -> None:
    """map (2 and 3 args), filter and exists_one work on lists and maps."""
    assert ev("[1, 2, 3].map(x, x * 10)") == [10, 20, 30]
    assert ev("[1, 2, 3].map(x, x > 1, x * 10)") == [20, 30]
    assert ev("[1, 2, 3].filter(x, x % 2 == 1)") == [1, 3]
    assert ev("{'a': 1, 'b': 2}.exists_one(k, k == 'a')") is True
    assert ev("[1, 1].exists_one(x, x == 1)") is False


def test_timestamp_of_one_field_read_twice_is_the_same_value_and_bad_text_fails_every_time() -> None:
    """Two rules converting the same string agree; a string that is not RFC 3339 is an error each time it is read."""
    program = cel.compile("now - timestamp(event.t) > duration('1h') && timestamp(event.t) < now")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    event = {"t": "2026-05-31T22:00:00+02:00"}
    assert program.evaluate({"event": event, "now": now}) is True
    assert ev("timestamp(t) == timestamp(t)", t=event["t"]) is True
    for _ in range(2):
        with pytest.raises(CELEvalError, match="not RFC 3339"):
            ev("timestamp(t)", t="yesterday")
    assert ev("timestamp(t)", t="2026-05-31T20:00:00Z") == datetime(2026, 5, 31, 20, tzinfo=UTC)


def test_timestamps_and_durations() -> None:
    """timestamp() and duration() map to datetime/timedelta and support arithmetic and accessors."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ev("now - duration('1h30m')", now=now) == now - timedelta(hours=1, minutes=30)
    assert ev("now > timestamp('2026-01-01T00:00:00Z')", now=now) is True
    assert ev("now.getHours() == 3 && now.getFullYear() == 2026", now=now) is True
    assert ev("string(duration('90s'))") == "90s"
    assert ev("int(timestamp('1970-01-01T00:01:00Z'))") == 60


def test_qualified_binding_names_win_longest_prefix() -> None:
    """A binding named "a.b" resolves the expression a.b.c before a binding "a" would."""
    assert ev("a.b.c", **{"a.b": {"c": 1}, "a": {"b": {"c": 2}}}) == 1


def test_non_cel_python_values_fail_cleanly() -> None:
    """A Python value that is not a CEL value (a set) raises CELEvalError, not TypeError."""
    with pytest.raises(CELEvalError):
        ev("x + 1", x={1})


def test_map_lookup_with_a_non_key_type_is_an_error() -> None:
    """Only int, uint, bool and string (and integral doubles) can look up a map key; bytes or null raise."""
    assert ev("'a' in {'a': 1} && !(2.5 in {2: 'x'}) && 2.0 in {2: 'x'}") is True
    with pytest.raises(CELEvalError, match="unsupported map key type"):
        ev("b'a' in {'a': 1}")
    with pytest.raises(CELEvalError, match="unsupported map key type"):
        ev("{'a': 1}[null]")


def test_programs_pickle_by_recompiling() -> None:
    """A Program survives pickling (e.g. to worker processes) and evaluates the same."""
    import pickle

    prog = pickle.loads(pickle.dumps(cel.compile("event.x * 2")))
    assert prog.evaluate({"event": {"x": 21}}) == 42


def test_missing_sentinel_binding_counts_as_absent() -> None:
    """A binding holding the emitter's MISSING sentinel behaves like an error value, never like a value."""
    from activelabel.cel.codegen import MISSING

    with pytest.raises(CELEvalError):
        ev("t == null", t=MISSING)
    assert ev("has(t.x) || true", t=MISSING) is True


def test_string_extension_functions() -> None:
    """The cel-go / Kubernetes string extensions work as methods, counting code points."""
    assert ev("'Hello Wörld'.lowerAscii()") == "hello wörld"
    assert ev("' x '.trim() + 'ab'.upperAscii()") == "xAB"
    assert ev("'a,b,c'.split(',')") == ["a", "b", "c"]
    assert ev("'a,b,c'.split(',', 2)") == ["a", "b,c"]
    assert ev("['a', 'b'].join('-')") == "a-b"
    assert ev("'aXbX'.replace('X', '.')") == "a.b."
    assert ev("'héllo'.indexOf('l') == 2 && 'héllo'.lastIndexOf('l') == 3") is True
    assert ev("'héllo'.substring(1, 3) + 'héllo'.charAt(4)") == "élo"
    with pytest.raises(CELEvalError, match="out of range"):
        ev("'abc'.substring(5)")


def test_compile_with_names_refuses_invalid_constant_regex() -> None:
    """With `names`, a constant matches() pattern RE2 refuses is a compile-time error at the pattern."""
    with pytest.raises(CELSyntaxError, match="invalid regular expression") as info:
        cel.compile("event.path.matches('(unclosed')", names=["event"])
    assert (info.value.line, info.value.column) == (1, 20)


def test_regex_answers_stay_exact_when_remembered() -> None:
    """Remembered matches() answers equal fresh RE2 answers, for repeated and long strings alike."""
    import re2

    prog = cel.compile("s.matches('^[a-z]+[0-9]{2,}$')")
    rx = re2.compile("^[a-z]+[0-9]{2,}$")
    samples = ["abc12", "abc1", "x99", "", "ab" * 400 + "12", "Abc12"] * 3
    for s in samples:
        assert prog.evaluate({"s": s}) is (rx.search(s) is not None)


def test_long_logical_chains_are_balanced_not_deep() -> None:
    """Thousands of `&&` terms parse into a shallow tree and evaluate without recursion errors."""
    text = " && ".join(f"x > {i}" for i in range(3000))
    assert cel.compile(text).evaluate({"x": 5000}) is True
    assert cel.compile(text).evaluate({"x": 5}) is False


def test_overlong_operator_chain_is_a_clear_syntax_error() -> None:
    """Hundreds of chained `+` are refused with a message instead of a Python RecursionError."""
    with pytest.raises(CELSyntaxError, match="chained operators"):
        cel.parse(" + ".join(["1"] * 400))


def test_long_member_chains_and_combined_depth_are_refused_clearly() -> None:
    """Overlong `.a.b.c...` chains and nesting-plus-chains beyond the tree limit are syntax errors."""
    with pytest.raises(CELSyntaxError, match="chained selections"):
        cel.parse("a" + ".b" * 300)
    text = "a" + ".b" * 200
    for _ in range(6):
        text = f"({text})" + ".b" * 200
    with pytest.raises(CELSyntaxError, match="nested too deeply"):
        cel.parse(text)


def test_lone_surrogates_are_syntax_errors() -> None:
    """Text that is not valid Unicode is refused by the lexer rather than crashing later."""
    with pytest.raises(CELSyntaxError, match="surrogate"):
        cel.parse("rb'a\ud800'")


def _cel_quote(s: str) -> str:
    out = []
    for ch in s:
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch.isprintable() and ch.isascii():
            out.append(ch)
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "'" + "".join(out) + "'"


def test_string_literals_round_trip_any_unicode() -> None:
    """Any Unicode string, written as a CEL literal with escapes, evaluates back to itself."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
    def check(s: str) -> None:
        assert cel.compile(_cel_quote(s)).evaluate({}) == s
        assert cel.compile("size(" + _cel_quote(s) + ")").evaluate({}) == len(s)

    check()
