"""The Python code emitter keeps its promise: a value it returns is exactly CEL's value."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from activelabel import cel
from activelabel.cel import UInt
from activelabel.cel.codegen import MISSING, PythonEmitter, compile_function
from activelabel.errors import CELEvalError, CELSyntaxError
from cel_conformance import decode, load_cases, same_value

# Values chosen to hit the places where Python and CEL disagree: bool vs int,
# int vs double, NaN, uint, bytes vs str, lists vs strings, nested maps.
VALUES: list[Any] = [
    None, True, False, 0, 1, 2, -1, 500, 2**53 + 1, 2**63 - 1, 1.0, 0.0, 1.5, 500.0, math.nan, math.inf,
    UInt(1), UInt(500), "", "a", "gold", "/pay/x", "GET", b"a", [], [1], ["x"], [True], {}, {"b": 1},
    {"b": {"c": 2}}, {"v": 2}, [{"v": 1}, {"v": 3}], {1: "a"},
]
EXPRESSIONS = [
    "event.x >= 500", "event.x == 1", "event.x != 1", "event.x == 0", "event.x == 'gold'", "event.x != 'gold'",
    "event.x == null", "event.x != null", "event.x == true", "!(event.x == 1)", "event.x < 1.5", "event.x > 'a'",
    "event.x in ['GET', 'HEAD']", "event.x in [0, 1, 2]", "event.x in [1.0, 'a']", "event.x in []", "event.x in {}",
    "event.x in event.y", "has(event.x.b)", "has(event.x)", "event.x.b", "event.x['b']", "event.x[0]",
    "size(event.x)", "event.x.size() > 0", "event.x.startsWith('/pay')", "event.x.endsWith('d')",
    "event.x.contains('a')", "event.x.matches('^/pay')", "event.x.matches('o.d')", "event.x && event.y",
    "event.x || true", "true || event.x", "event.x ? 1 : 2", "event.x + event.y", "event.x - 1", "event.x * 2",
    "event.x / 2", "event.x / 0.0", "event.x % 2", "-event.x", "int(event.x)", "uint(event.x)", "double(event.x)",
    "string(event.x)", "bool(event.x)", "type(event.x) == int", "dyn(event.x)", "[event.x]", "{'k': event.x}",
    "{event.x: 1}", "event.x.exists(i, i == 1)", "event.x.exists(i, i == 2)", "event.x.exists(i, 'a' == i)", "event.x.all(i, i > 0)", "event.x.exists_one(i, i == 'x')",
    "event.x.map(i, i.v)", "event.x.filter(i, i.v > 1)", "event.x.map(i, i > 0, i)", "event.x == event.y",
    "event.x < event.y", "event.x >= event.y", "event.x[event.y]", "event.x.b.c", "has(event.x.b.c)",
    "event.x == [1]", "event.x == {'b': 1}", "event.x.b == 1 || event.y == 2", "event.x in {'b': 1}",
    "(event.x == 1) == (event.y == 1)", "event.x ? event.y : event.x", "event.x", "event.x + 'a'",
    "'a' + event.x", "event.x < 500", "500 < event.x", "event.x <= 2.0", "event.x == 2.0", "event.x == 1u",
    "size(event.x) == 1", "!event.x", "event.x.matches(event.y)", "event.x.startsWith(event.y)",
    "event.x == b'a'", "event.x < b'b'", "event.x.lowerAscii()", "event.x.split('a')", "event.x.join(',')",
    "event.x.substring(1)",
]
_ABSENT = object()


def _exact(program: cel.Program, bindings: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "value", program.evaluate(bindings)
    except CELEvalError:
        return "error", None


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_emitted_code_is_exact_whenever_it_returns(expr: str) -> None:
    """Over adversarial field values (and absent fields), each value the fast path returns equals the exact one."""
    fn = compile_function(expr, roots=["event"])
    returned = 0
    for x, y in itertools.product([*VALUES, _ABSENT], [*VALUES[::3], _ABSENT]):
        event = {k: v for k, v in (("x", x), ("y", y)) if v is not _ABSENT}
        try:
            fast = fn.fast(event)
        except Exception:
            continue  # the caller falls back to the exact evaluator: always allowed
        returned += 1
        kind, exact = _exact(fn.program, {"event": event})
        assert kind == "value" and same_value(exact, fast), f"{expr} on {event!r}: fast {fast!r}, exact {kind} {exact!r}"
    assert returned > 0, f"{expr}: the fast path never returned"


def _conformance_cases() -> list[dict[str, Any]]:
    return [c for c in load_cases() if "proto_messages" not in c.get("requires", [])
            and not c.get("disable_macros") and not any("." in k for k in c.get("bindings", {}))]


def test_emitted_code_agrees_with_exact_evaluator_on_conformance_cases() -> None:
    """On every runnable cel-spec case, the emitted code either raises or returns the exact value."""
    fast_returns = 0
    for case in _conformance_cases():
        bindings = {k: decode(v) for k, v in case.get("bindings", {}).items()}
        fn = compile_function(case["expr"], roots=sorted(bindings))
        try:
            fast = fn.fast(*[bindings[r] for r in fn.roots])
        except Exception:
            continue
        fast_returns += 1
        kind, exact = _exact(fn.program, bindings)
        assert kind == "value" and same_value(exact, fast), f"{case['name']}: {case['expr']!r}"
    assert fast_returns > 800


def test_compiled_function_falls_back_to_exact_result() -> None:
    """compile_function() gives Program.evaluate's answer, including absorbed errors and errors."""
    fn = compile_function("event.nope || event.status >= 500")
    assert fn({"event": {"status": 503}}) is True
    with pytest.raises(CELEvalError, match="no such key"):
        fn({"event": {"status": 200}})


def test_hoisting_loads_each_path_once_and_prologue_never_raises() -> None:
    """Paths used by several expressions share one local; its load tolerates absent keys and non-map parents."""
    ns: dict[str, Any] = {}
    em = PythonEmitter(ns, roots={"event": "event"})
    a = em.emit(cel.parse("event.http.status >= 500"))
    b = em.emit(cel.parse("event.http.status == 404 || has(event.http.method)"))
    assert list(em.hoisted_paths()) == [("event", "http"), ("event", "http", "status")]
    src = "def f(event):\n" + "".join(f"    {s}\n" for s in em.prologue("event")) + f"    return ({a}, {b})\n"
    exec(src, ns)
    assert ns["f"]({"http": {"status": 503, "method": "GET"}}) == (True, True)
    for event in ({}, {"http": 5}, {"http": None}, None, "text"):
        with pytest.raises(Exception):
            ns["f"](event)


def test_missing_sentinel_raises_on_every_operation() -> None:
    """MISSING refuses comparison, hashing, truth, arithmetic, len, membership and attributes."""
    operations = [
        lambda m: m == 1, lambda m: m == 1, lambda m: m != "a", lambda m: m < 1, lambda m: m <= 1,
        lambda m: hash(m), lambda m: bool(m), lambda m: m + 1, lambda m: 1 - m, lambda m: len(m),
        lambda m: 1 in m, lambda m: m in frozenset({1}), lambda m: m.startswith("a"), lambda m: m["k"],
        lambda m: -m, lambda m: not m, lambda m: iter(m),
    ]
    for op in operations:
        with pytest.raises(Exception):
            op(MISSING)


def test_has_is_exact_on_hoisted_paths() -> None:
    """has(event.a.b) is false for an absent key and raises when event.a is missing or not a map."""
    fn = compile_function("has(event.a.b)")
    assert fn.fast({"a": {"b": 1}}) is True
    assert fn.fast({"a": {}}) is False
    for event in ({}, {"a": [1]}, {"a": "b"}):
        with pytest.raises(Exception):
            fn.fast(event)


def test_bound_label_paths_use_caller_locals() -> None:
    """Bound paths read the caller's local; has() on a bound path tests it against MISSING."""
    ns: dict[str, Any] = {}
    em = PythonEmitter(ns, roots={"event": "event"}, bound={("labels", "tier"): "_L_tier"})
    eq = em.emit(cel.parse("labels.tier == 'gold'"))
    has = em.emit(cel.parse("has(labels.tier)"))
    exec(f"def f(event, _L_tier):\n    return {has}, {eq}\n", ns)
    assert ns["f"]({}, "gold") == (True, True)
    with pytest.raises(Exception):
        ns["f"]({}, MISSING)
    exec(f"def g(event, _L_tier):\n    return {has}\n", ns)
    assert ns["g"]({}, MISSING) is False


def test_constant_patterns_and_lists_are_installed_once() -> None:
    """Regexes and `in` lists with constant contents become namespace objects built at emit time."""
    ns: dict[str, Any] = {}
    em = PythonEmitter(ns, roots={"event": "event"})
    src = em.emit(cel.parse("event.m in ['GET', 'HEAD'] && event.p.matches('^/api/v[0-9]+/')"))
    assert any(isinstance(v, frozenset) and v == {"GET", "HEAD"} for v in ns.values())
    assert "re2" not in src and "compile" not in src
    assert "(" in src and "_cel_" in src


def test_constant_subexpressions_are_folded() -> None:
    """Subtrees without free identifiers are evaluated at emit time."""
    em = PythonEmitter({}, roots={"event": "event"})
    src = em.emit(cel.parse("event.n > 60 * 60 * 24"))
    assert "86400" in src and "60" not in src.replace("86400", "")
    assert em.emit(cel.parse("1 + 2")) == "3"


def test_unsupported_constructs_fall_back_instead_of_guessing() -> None:
    """Unknown identifiers and functions emit code that raises, so the exact evaluator decides."""
    fn = compile_function("nobody.x == 1 || frob(event)", roots=["event"])
    with pytest.raises(Exception):
        fn.fast({})
    with pytest.raises(CELEvalError):
        fn({"event": {}})


def test_emitter_output_always_compiles_even_for_deep_nesting() -> None:
    """CEL nests deeper than Python parses; too-deep expressions become a fallback, never broken source."""
    em = PythonEmitter({}, roots={"a": "a"})
    for n in (10, 100, 240):
        for text in ["a" + ".b" * n, "[" * n + "a" + "]" * n, "true ? a : " * n + "2", "-(" * n + "a" + ")" * n,
                     "(a + " * n + "1" + ")" * n, "{'k': " * n + "a" + "}" * n]:
            src = em.emit(cel.parse(text))
            compile(src, "<test>", "eval")
    fn = compile_function("-(" * 240 + "a" + ")" * 240)
    assert fn({"a": 5}) == 5


# ---- random expressions --------------------------------------------------------------

_LITERALS = ["0", "1", "2", "-1", "500", "1u", "0u", "1.0", "0.5", "-0.0", "'a'", "''", "'gold'", "b'a'", "true",
             "false", "null", "[]", "[1, 'a']", "{}", "{'a': 1}", "{1: 2}", "9223372036854775807", "int", "string"]
_PATHS = ["event.x", "event.y", "event.a.b", "event['x']", "event.l", "event.m", "x", "event"]
_IN_RIGHT = ["[1, 2]", '["a", "b"]', '{"a": 1}']
_STR_ARGS = ['"a"', '"^g.l"']
_INDEXES = ["0", "1", '"k"']
_FUNCS = ["size", "int", "uint", "double", "string", "bool", "type", "dyn", "bytes"]
_RANDOM_VALUES: list[Any] = [None, True, False, 0, 1, -1, 2, 500, 1.0, 0.5, math.nan, UInt(1), "a", "gold", "", b"a",
                             [], [1, 2], ["a", 1], {}, {"k": 1}, {"a": 1}, {"b": 2}]


def _random_expr(rng: Any, depth: int) -> str:
    if depth <= 0 or rng.random() < 0.25:
        return str(rng.choice(_LITERALS + _PATHS))

    def sub() -> str:
        return _random_expr(rng, depth - 1)

    k = rng.randint(0, 14)
    if k == 0:
        return f"({sub()} {rng.choice(['==', '!=', '<', '<=', '>', '>='])} {sub()})"
    if k == 1:
        return f"({sub()} {rng.choice(['&&', '||'])} {sub()})"
    if k == 2:
        return f"({sub()} {rng.choice(['+', '-', '*', '/', '%'])} {sub()})"
    if k == 3:
        return f"!{sub()}"
    if k == 4:
        return f"-{sub()}"
    if k == 5:
        return f"({sub()} ? {sub()} : {sub()})"
    if k == 6:
        return f"({sub()} in {rng.choice([*_IN_RIGHT, sub()])})"
    if k == 7:
        return f"{rng.choice(_FUNCS)}({sub()})"
    if k == 8:
        return f"{sub()}.{rng.choice(['startsWith', 'endsWith', 'contains', 'matches'])}({rng.choice([*_STR_ARGS, sub()])})"
    if k == 9:
        return f"has({rng.choice(['event.x', 'event.a.b', 'event.m.k', 'x.q'])})"
    if k == 10:
        body = _random_expr(rng, depth - 1).replace("event.x", "i")
        macro = rng.choice(["exists", "all", "exists_one", "filter", "map"])
        return f"{rng.choice(['event.l', 'event.m', '[1, 2, 3]', sub()])}.{macro}(i, {body})"
    if k == 11:
        return f"[{sub()}, {sub()}]"
    if k == 12:
        return f"{{'k': {sub()}}}"
    if k == 13:
        return f"{sub()}[{rng.choice([*_INDEXES, sub()])}]"
    return f"{sub()}.size()"


def test_random_expressions_agree_with_exact_evaluator() -> None:
    """Over seeded random expressions and events, emitted code never returns a value the exact evaluator would not."""
    import random

    rng = random.Random(20260601)
    fast_returns = 0
    for _ in range(1500):
        text = _random_expr(rng, 4)
        try:
            ast = cel.parse(text)
        except CELSyntaxError:
            continue
        fn = compile_function(ast, roots=["event", "x"])
        for _ in range(4):
            event = {k: rng.choice(_RANDOM_VALUES) for k in "xyalm" if rng.random() < 0.8}
            if rng.random() < 0.5:
                event["a"] = {"b": rng.choice(_RANDOM_VALUES)}
            bindings = {"event": event, "x": rng.choice(_RANDOM_VALUES)}
            try:
                fast = fn.fast(event, bindings["x"])
            except Exception:
                continue
            fast_returns += 1
            kind, exact = _exact(fn.program, bindings)
            assert kind == "value" and same_value(exact, fast), f"{text} on {bindings!r}:\n{fn.source}"
    assert fast_returns > 1000


def test_emit_bool_raises_unless_the_value_is_a_bool() -> None:
    """emit_bool() code is a Python bool exactly when CEL's value is a bool, and raises otherwise."""
    ns: dict[str, Any] = {}
    em = PythonEmitter(ns, roots={"event": "event"})
    exprs = {text: em.emit_bool(cel.parse(text)) for text in ["event.flag", "event.n > 1 && event.flag", "event.n"]}
    body = ", ".join(f"{text!r}: lambda: {src}" for text, src in exprs.items())
    exec("def f(event):\n" + "".join(f"    {s}\n" for s in em.prologue("event")) + f"    return {{{body}}}\n", ns)
    checks = ns["f"]({"flag": True, "n": 2})
    assert checks["event.flag"]() is True and checks["event.n > 1 && event.flag"]() is True
    with pytest.raises(Exception):
        checks["event.n"]()
    with pytest.raises(Exception):
        ns["f"]({"flag": 1, "n": 2})["event.flag"]()


def test_roots_named_like_python_builtins_do_not_break_the_generated_code() -> None:
    """CEL roots called bool, dict, str, len or any are locals that cannot shadow what the code calls."""
    text = "bool.x >= 500 && size(len) == 2 && any.exists(v, v == 'a') && has(dict.k) && str.s == 1"
    fn = compile_function(text, roots=["any", "bool", "dict", "len", "str"])
    args = {"bool": {"x": 503}, "len": [1, 2], "any": ["a"], "dict": {"k": 1}, "str": {"s": 1}}
    assert fn.fast(*[args[r] for r in fn.roots]) is True
    args["bool"] = {"x": True}
    with pytest.raises(Exception):
        fn.fast(*[args[r] for r in fn.roots])
    with pytest.raises(CELEvalError):
        fn(args)
