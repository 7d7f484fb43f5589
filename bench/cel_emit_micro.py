"""Micro benchmark of activelabel.cel's code emitter.

For a few typical rule expressions, compares per-evaluation cost of:
  emitted   the PythonEmitter's code in a generated function (prologue + expression)
  exact     Program.evaluate (the exact closure-tree evaluator)
  hand      hand-written Python a careful user would write for the same rule
and prints ns/op with ratios to hand-written. Run:

    PYTHONPATH=src .venv/bin/python bench/cel_emit_micro.py [--show-source]

Numbers are machine-dependent; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from activelabel import cel
from activelabel.cel.codegen import MISSING, PythonEmitter

EVENT = {
    "status": 503, "path": "/pay/checkout/42", "method": "POST",
    "tags": ["web", "eu", "urgent"], "http": {"status": 503, "host": "api.example.com"},
}
TENANT = {"tier": "gold", "region": "eu"}
LABEL_TIER = "gold"


def _hand_status(e: dict, t: Any, tier: Any) -> Any:
    s = e.get("status")
    return type(s) is int and s >= 500


def _hand_pay(e: dict, t: Any, tier: Any) -> Any:
    p, s = e.get("path"), e.get("status")
    return isinstance(p, str) and p.startswith("/pay") and type(s) is int and s >= 500


def _hand_tier(e: dict, t: Any, tier: Any) -> Any:
    return tier == "gold"


def _hand_method(e: dict, t: Any, tier: Any) -> Any:
    return e.get("method") in ("GET", "HEAD") and "auth" not in e


def _hand_tenant(e: dict, t: Any, tier: Any) -> Any:
    return isinstance(t, dict) and t.get("tier") in ("gold", "silver")


def _hand_tags(e: dict, t: Any, tier: Any) -> Any:
    return "urgent" in e.get("tags", ())


def _hand_size(e: dict, t: Any, tier: Any) -> Any:
    return "long" if len(e.get("path", "")) > 10 else "short"


def _hand_nested(e: dict, t: Any, tier: Any) -> Any:
    h = e.get("http")
    return isinstance(h, dict) and h.get("status") == 503 and h.get("host", "").endswith(".example.com")


CASES: list[tuple[str, Callable[..., Any]]] = [
    ("event.status >= 500", _hand_status),
    ('event.path.startsWith("/pay") && event.status >= 500', _hand_pay),
    ('labels.tier == "gold"', _hand_tier),
    ('event.method in ["GET", "HEAD"] && !has(event.auth)', _hand_method),
    ('has(tenant.tier) && tenant.tier in ["gold", "silver"]', _hand_tenant),
    ('event.tags.exists(t, t == "urgent")', _hand_tags),
    ('size(event.path) > 10 ? "long" : "short"', _hand_size),
    ('event.http.status == 503 && event.http.host.endsWith(".example.com")', _hand_nested),
    ('event.path.matches("^/pay/[a-z]+/[0-9]+$")', None),  # type: ignore[list-item]
]


def build_emitted(expr: str) -> tuple[Callable[..., Any], str]:
    """One generated function per expression, shaped like the engine's: roots as arguments."""
    ns: dict[str, Any] = {}
    em = PythonEmitter(ns, roots={"event": "event", "tenant": "_enr_tenant"}, bound={("labels", "tier"): "_L_tier"})
    body = em.emit(cel.parse(expr))
    lines = ["def rule(event, _enr_tenant, _L_tier):"]
    lines += ["    " + s for s in em.prologue("event") + em.prologue("tenant")]
    lines.append(f"    return {body}")
    src = "\n".join(lines)
    exec(compile(src, "<bench>", "exec"), ns)  # noqa: S102 - our generated code
    return ns["rule"], src


def time_ns(fn: Callable[[], Any], target_s: float = 0.2) -> float:
    """Best-of-5 nanoseconds per call, each run sized to about ``target_s / 5`` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        dt = time.perf_counter_ns() - t0
        if dt > target_s * 1e9 / 5 or n > 10_000_000:
            break
        n *= 2
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show-source", action="store_true", help="print each generated function")
    args = ap.parse_args()
    bindings = {"event": EVENT, "tenant": TENANT, "labels": {"tier": LABEL_TIER}}
    print(f"{'expression':<70}{'emitted':>10}{'exact':>10}{'hand':>8}{'exact/emit':>12}{'emit/hand':>11}")
    for expr, hand in CASES:
        emitted, src = build_emitted(expr)
        program = cel.compile(expr)
        expected = program.evaluate(bindings)
        got = emitted(EVENT, TENANT, LABEL_TIER)
        assert got == expected, (expr, got, expected)
        # Each lambda is timed at once, inside this iteration; default arguments bind the current case.
        t_emit = time_ns(lambda f=emitted: f(EVENT, TENANT, LABEL_TIER))
        t_exact = time_ns(lambda p=program: p.evaluate(bindings))
        if hand is not None:
            assert hand(EVENT, TENANT, LABEL_TIER) == expected, expr
            t_hand = time_ns(lambda h=hand: h(EVENT, TENANT, LABEL_TIER))
            hand_cols = f"{t_hand:>8.0f}{t_exact / t_emit:>12.1f}{t_emit / t_hand:>11.2f}"
        else:
            hand_cols = f"{'-':>8}{t_exact / t_emit:>12.1f}{'-':>11}"
        print(f"{expr[:69]:<70}{t_emit:>10.0f}{t_exact:>10.0f}{hand_cols}")
        if args.show_source:
            print("    " + src.replace("\n", "\n    "))
    print("ns/op, best of 5; emitted includes the hoisted field loads (prologue) of its own roots.")
    assert MISSING is not None


if __name__ == "__main__":
    main()
