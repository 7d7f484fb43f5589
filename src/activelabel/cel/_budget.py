"""The evaluation budget: what one CEL expression may cost, estimated and at run time.

As cel-go's cost limit does, the budget has two halves:

- **estimated cost, at compile time** (`estimate_cost`): a static upper bound of the
  work an expression does (one unit per node, plus one per ten characters a string
  operation produces or scans, as cel-go's traversal factor of 0.1, times the
  iterations of each comprehension).
  A policy whose expression estimates above `COST_LIMIT` is refused. Sizes of
  values the expression does not know (event fields) are assumed to be
  `ASSUMED_STRING_SIZE` characters and `ASSUMED_LIST_SIZE` elements.
- **limits, at run time**: no operation may build a string, bytes or list longer
  than `MAX_SIZE` (`check_size`, checked before the value is built), and one
  evaluation may take at most `MAX_ITERATIONS` comprehension steps in total
  (`iteration_budget`). Crossing either is a `CELEvalError`, i.e. a rule error,
  counted like any other; it never hangs and never allocates without bound.

Constant folding evaluates through the exact evaluator, so it obeys the same limits.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from activelabel.cel._ast import Call, CreateList, CreateMap, Expr, Literal, Macro, Select, iter_nodes
from activelabel.errors import CELEvalError

COST_LIMIT = 10_000_000
"""Largest estimated cost (work units) of one expression a policy may contain."""

MAX_SIZE = 1 << 20
"""Longest string (characters), bytes value or list (elements) an operation may build: 1 MiB."""

MAX_ITERATIONS = 100_000
"""Comprehension steps (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) per evaluation."""

ASSUMED_STRING_SIZE = 1_000
"""Characters assumed, for the estimate, in a string whose size is not known at compile time."""

ASSUMED_LIST_SIZE = 100
"""Elements assumed, for the estimate, in a list or map whose size is not known at compile time."""

# Functions whose cost is the size of what they scan (their target / first argument).
_SCANNING = frozenset(
    {"contains", "startsWith", "endsWith", "matches", "indexOf", "lastIndexOf", "split", "size",
     "lowerAscii", "upperAscii", "trim", "substring", "join", "_==_", "_!=_", "@in"}
)


def check_size(n: int, what: str) -> None:
    """CELEvalError when an operation would build a value of ``n`` characters/elements."""
    if n > MAX_SIZE:
        raise CELEvalError(f"{what} result of size {n:,} exceeds the limit of {MAX_SIZE:,}")


_BUDGET: ContextVar[list[int] | None] = ContextVar("activelabel_cel_budget", default=None)


def iteration_budget() -> list[int]:
    """The running evaluation's remaining comprehension steps (a one-element cell).

    Outside `Program.evaluate` (a closure called directly) each comprehension
    gets a fresh allowance, so nothing is shared between unrelated calls.
    """
    cell = _BUDGET.get()
    return cell if cell is not None else [MAX_ITERATIONS]


def start_evaluation() -> object:
    """Give the evaluation about to run its own step allowance; pass the token to `end_evaluation`."""
    return _BUDGET.set([MAX_ITERATIONS])


def end_evaluation(token: object) -> None:
    _BUDGET.reset(token)  # type: ignore[arg-type]


def iterations_exceeded() -> CELEvalError:
    return CELEvalError(
        f"comprehension steps exceed the limit of {MAX_ITERATIONS:,} per evaluation"
        " (a macro over a large list, or nested macros)"
    )


def has_nested_macro(node: Macro) -> bool:
    """True when a comprehension's range or body holds another comprehension.

    The generated fast path runs only single comprehensions; nested ones go to
    the exact evaluator, which counts every step against `MAX_ITERATIONS`.
    """
    return any(isinstance(n, Macro) for part in (node.target, *node.args) for n in iter_nodes(part))


@dataclass
class _Est:
    cost: int
    size: int | None  # characters / elements when it is a sized value and the size is known


class CostExceeded(Exception):
    """The estimate crossed `COST_LIMIT` at ``node``."""

    def __init__(self, node: Expr, cost: int) -> None:
        super().__init__(cost)
        self.node = node
        self.cost = cost


def estimate_cost(root: Expr) -> int:
    """The estimated cost of ``root``; raises `CostExceeded` at the first node past the limit."""
    return _estimate(root).cost


def _estimate(node: Expr) -> _Est:
    est = _estimate_node(node)
    if est.cost > COST_LIMIT:
        raise CostExceeded(node, est.cost)
    return est


def _chars(n: int) -> int:
    """The cost of producing or scanning ``n`` characters."""
    return n // 10 + 1


def _str_size(e: _Est) -> int:
    return e.size if e.size is not None else ASSUMED_STRING_SIZE


def _estimate_node(node: Expr) -> _Est:
    if isinstance(node, Literal):
        v = node.value
        return _Est(1, len(v) if isinstance(v, (str, bytes)) else None)
    if isinstance(node, Select):
        return _Est(_estimate(node.operand).cost + 1, None)
    if isinstance(node, CreateList):
        parts = [_estimate(e) for e in node.elements]
        return _Est(1 + sum(p.cost for p in parts), len(parts))
    if isinstance(node, CreateMap):
        parts = [_estimate(e) for kv in node.entries for e in kv]
        return _Est(1 + sum(p.cost for p in parts), len(node.entries))
    if isinstance(node, Macro):
        rng = _estimate(node.target)
        n = rng.size if rng.size is not None else ASSUMED_LIST_SIZE
        body = sum(_estimate(a).cost for a in node.args)
        size = n if node.kind in ("map", "filter") else None
        return _Est(rng.cost + n * (body + 1), size)
    if isinstance(node, Call):
        return _estimate_call(node)
    return _Est(1 + sum(_estimate(c).cost for c in node.children()), None)


def _estimate_call(node: Call) -> _Est:
    target = _estimate(node.target) if node.target is not None else None
    args = [_estimate(a) for a in node.args]
    operands = ([target] if target is not None else []) + args
    cost = 1 + sum(o.cost for o in operands)
    fn = node.function
    if fn == "_?_:_" and len(args) == 3:
        branch = max(args[1:], key=lambda e: e.cost)
        sizes = [a.size for a in args[1:]]
        size = None if None in sizes else max(s for s in sizes if s is not None)
        return _Est(1 + args[0].cost + branch.cost, size)
    if fn == "replace" and len(operands) >= 3:
        s, old, new = (_str_size(o) for o in operands[:3])
        if isinstance(_literal(node, 1), str) and old > 0:
            out = s + (s // old) * max(0, new - old)
        else:  # an empty (or unknown) pattern matches between every two characters
            out = s + (s + 1) * new
        return _Est(cost + _chars(out), out)
    if fn == "_+_" and len(operands) == 2:
        a, b = operands
        if a.size is not None or b.size is not None:  # a string or list: the other side is one too
            size = _str_size(a) + _str_size(b)
            return _Est(cost + _chars(size), size)
        return _Est(cost, None)
    if fn in _SCANNING and operands:
        return _Est(cost + _chars(_str_size(operands[0])), None)
    return _Est(cost, None)


def _literal(node: Call, i: int) -> object:
    """The constant value of the ``i``-th operand (target first) when it is a literal."""
    operands = ([node.target] if node.target is not None else []) + list(node.args)
    return operands[i].value if i < len(operands) and isinstance(operands[i], Literal) else None  # type: ignore[attr-defined]
