"""Extraction for the columnar batch path: event dicts to typed Polars columns.

One generated loop reads the fields a policy uses out of a batch of event dicts
(recording absent keys and non-map parents as it goes); the values become typed
Series, with rows of an unexpected type handed back to the per-event path.
String functions over columns with few distinct values run once per value with
the CEL evaluator's own functions. Split from ``engine/batch.py``, which owns
the translation and the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from activelabel.cel import regex_matcher as matcher

_INT64 = (-(2**63), 2**63 - 1)
_EXACT_FLOAT_INT = 2**53  # ints up to here convert to doubles exactly

_ABSENT = object()  # what the extractor's `.get` returns for a key that is not there

Extracted = tuple[list[list[Any]], list[int], list[list[int]], list[list[int]]]


def _make_extractor(paths: list[tuple[str, ...]], stateful: set[tuple[str, ...]]) -> Callable[[Sequence[Any]], Extracted]:
    """Generate one loop that reads every path of every event into per-path lists.

    Returns (columns, odd rows, missing rows per path, parent-error rows per path).
    A missing field reads as None; for the paths in ``stateful`` (where a JSON
    null and a missing field give different results) the loop also records the
    rows where the key was absent, and where a parent was absent or not a map.
    A parent that is a dict subclass marks the row for the per-event path,
    since the fast reads only descend into plain dicts.
    """
    tree: dict[Any, Any] = {}
    for j, p in enumerate(paths):
        node = tree
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node.setdefault(("leaf", p[-1]), []).append(j)
    tracked = [j for j, p in enumerate(paths) if p in stateful]
    lines = ["def extract(events):"]
    for j in range(len(paths)):
        lines.append(f"    c{j} = []; a{j} = c{j}.append")
    for j in tracked:
        lines.append(f"    ms{j} = []; m{j} = ms{j}.append; ps{j} = []; p{j} = ps{j}.append")
    lines += ["    odd = []", "    for i, e in enumerate(events):", "        if e.__class__ is not dict:",
              "            odd.append(i)"]
    for j in range(len(paths)):
        lines.append(f"            a{j}(None)")
    lines.append("            continue")
    counter = [0]

    def leaves_under(node: dict[Any, Any]) -> list[int]:
        out: list[int] = []
        for key, sub in node.items():
            out += sub if isinstance(key, tuple) else leaves_under(sub)
        return out

    def emit(node: dict[Any, Any], var: str, depth: int) -> None:
        pad = "    " * depth
        for key, sub in node.items():
            if isinstance(key, tuple):
                for j in sub:
                    if j in tracked:
                        lines.append(f"{pad}x = {var}.get({key[1]!r}, _ABSENT)")
                        lines.append(f"{pad}if x is _ABSENT: x = None; m{j}(i)")
                        lines.append(f"{pad}a{j}(x)")
                    else:
                        lines.append(f"{pad}a{j}({var}.get({key[1]!r}))")
                continue
            counter[0] += 1
            v = f"v{counter[0]}"
            lines.append(f"{pad}{v} = {var}.get({key!r})")
            lines.append(f"{pad}if {v}.__class__ is dict:")
            emit(sub, v, depth + 1)
            lines.append(f"{pad}else:")
            lines.append(f"{pad}    if {v} is not None and isinstance({v}, dict): odd.append(i)")
            for j in leaves_under(sub):
                lines.append(f"{pad}    a{j}(None)")
                if j in tracked:
                    lines.append(f"{pad}    m{j}(i); p{j}(i)")

    emit(tree, "e", 2)
    cols = ", ".join(f"c{j}" for j in range(len(paths)))
    miss = ", ".join(f"ms{j}" if j in tracked else "[]" for j in range(len(paths)))
    perr = ", ".join(f"ps{j}" if j in tracked else "[]" for j in range(len(paths)))
    lines.append(f"    return [{cols}], odd, [{miss}], [{perr}]")
    ns: dict[str, Any] = {"_ABSENT": _ABSENT}
    exec(compile("\n".join(lines) + "\n", "<activelabel columnar extract>", "exec"), ns)  # noqa: S102
    extract: Callable[[Sequence[Any]], Extracted] = ns["extract"]
    return extract


_DTYPES = {str: pl.String, int: pl.Int64, float: pl.Float64, bool: pl.Boolean}
# Values no translated operation can see inside: equal to no scalar literal, an error
# for ordering and string functions, present for has(). They read as null in the column.
_OPAQUE = (list, tuple, dict, bytes)


def _to_series(name: str, values: list[Any]) -> tuple[pl.Series, list[int], list[int]]:
    """A typed Series of ``values``; the rows left to the per-event path (values of
    unusual types); the rows whose value is opaque (a list, map or bytes, read as null)."""
    classes = set(map(type, values))
    classes.discard(type(None))
    if not classes:
        return pl.Series(name, values, dtype=pl.Null), [], []
    if len(classes) == 1:
        cls = next(iter(classes))
        dtype = _DTYPES.get(cls)
        if dtype is not None:
            try:
                return pl.Series(name, values, dtype=dtype, strict=True), [], []
            except (TypeError, OverflowError, pl.exceptions.PolarsError):
                pass  # ints beyond int64
    elif classes == {int, float} and all(
        -_EXACT_FLOAT_INT <= v <= _EXACT_FLOAT_INT for v in values if v.__class__ is int
    ):
        # CEL compares ints with doubles as doubles: exact up to 2**53.
        return pl.Series(name, [float(v) if v.__class__ is int else v for v in values], dtype=pl.Float64), [], []
    return _to_series_mixed(name, values)


def _to_series_mixed(name: str, values: list[Any]) -> tuple[pl.Series, list[int], list[int]]:
    counts: dict[type, int] = {}
    for v in values:
        if v.__class__ in _DTYPES:
            counts[v.__class__] = counts.get(v.__class__, 0) + 1
    dominant = max(counts, key=counts.__getitem__) if counts else type(None)
    clean = list(values)
    bad: list[int] = []
    opaque: list[int] = []
    for i, v in enumerate(values):
        c = v.__class__
        if v is None or (c is dominant and (c is not int or _INT64[0] <= v <= _INT64[1])):
            continue
        clean[i] = None
        (opaque if isinstance(v, _OPAQUE) else bad).append(i)
    dtype = _DTYPES.get(dominant, pl.Null)
    return pl.Series(name, clean, dtype=dtype, strict=True), bad, opaque


def _apply_string_fn(s: Any, fn: str, arg: str) -> Any:
    """The Polars form of a CEL string function (on a Series or an expression)."""
    if fn == "startsWith":
        return s.str.starts_with(arg)
    if fn == "endsWith":
        return s.str.ends_with(arg)
    if fn == "contains":
        return s.str.contains(arg, literal=True)
    return s.str.contains(arg, literal=False, strict=True)


_EXACT_STRING_FNS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": lambda s, sub: sub in s,
    "matches": lambda s, pattern: matcher(pattern)(s),
}


def _string_leaf_columns(series: pl.Series, values: list[Any], leaves: list[tuple[int, str, str]],
                         clean: bool) -> dict[str, pl.Series]:
    """Boolean columns ``s<id>`` for the string functions over a column with few distinct values.

    Each function runs once per distinct value, with the CEL evaluator's own
    functions (RE2 for `matches`), and the results are gathered back to rows.
    Columns with many distinct values give nothing: their functions stay Polars expressions.
    """
    n = len(values)
    if series.dtype != pl.String or not clean:
        return {}
    try:
        distinct = set(values)
    except TypeError:  # opaque values (lists, maps) among the strings
        return {}
    if len(distinct) * 4 > n:
        return {}
    distinct.discard(None)
    uniq = list(distinct)
    index: dict[Any, int | None] = {v: i for i, v in enumerate(uniq)}
    index[None] = None
    codes = pl.Series([index[v] for v in values], dtype=pl.Int64)
    per_value = pl.DataFrame({f"s{i}": pl.Series([_EXACT_STRING_FNS[fn](v, arg) for v in uniq], dtype=pl.Boolean)
                              for i, fn, arg in leaves})
    return per_value.select(pl.all().gather(codes)).to_dict()
