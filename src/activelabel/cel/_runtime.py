"""Runtime support for generated code: the MISSING sentinel and small exact helpers.

Generated expressions may raise anything; the engine then re-evaluates with the
exact evaluator. So helpers here only need to be exact when they return, and
must raise whenever a MISSING value reaches them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from activelabel.cel import _functions as F
from activelabel.cel._budget import MAX_ITERATIONS
from activelabel.cel._values import _ORDERED, NUMERIC, UInt, _kind, cel_compare, cel_equal, map_get, type_name
from activelabel.errors import CELEvalError, NoOverloadError


class NeedsExactEvaluation(Exception):
    """Raised by generated code where the fast path cannot decide; the caller evaluates exactly."""


class MissingFieldError(NeedsExactEvaluation, AttributeError):
    """A hoisted field was absent (or its parent was not a map) and the value was used."""


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise MissingFieldError("field is missing")


class _Missing:
    """The value of a hoisted field that is absent. Every operation on it raises."""

    __slots__ = ()

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __hash__ = __bool__ = __len__ = __iter__ = __contains__ = __getitem__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _refuse
    __neg__ = __pos__ = __abs__ = __invert__ = __index__ = __int__ = __float__ = _refuse

    def __getattr__(self, name: str) -> Any:
        raise MissingFieldError(f"field is missing (.{name})")

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def fallback() -> NoReturn:
    """Generated code calls this where only the exact evaluator can answer."""
    raise NeedsExactEvaluation("exact evaluation needed")


def value(v: Any) -> Any:
    """``v`` unless it is MISSING (used where a value escapes into the result)."""
    if v is MISSING:
        raise MissingFieldError("field is missing")
    return v


def boolean(v: Any) -> bool:
    """``v`` if it is a CEL bool; raise otherwise (for &&, ||, !, ?: and macro predicates)."""
    if v is True or v is False:
        return v
    raise NeedsExactEvaluation(f"expected bool, got {type_name(v)}")


def eq(a: Any, b: Any) -> bool:
    ca = a.__class__
    if ca is b.__class__ and (ca is str or ca is int):
        return a == b  # type: ignore[no-any-return]
    if a is MISSING or b is MISSING:
        raise MissingFieldError("field is missing")
    return cel_equal(a, b)


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _fast_order(a: Any, b: Any) -> bool:
    ca = a.__class__
    return ca is b.__class__ and (ca is int or ca is str or ca is float)


def lt(a: Any, b: Any) -> bool:
    return a < b if _fast_order(a, b) else cel_compare("_<_", a, b)


def le(a: Any, b: Any) -> bool:
    return a <= b if _fast_order(a, b) else cel_compare("_<=_", a, b)


def gt(a: Any, b: Any) -> bool:
    return a > b if _fast_order(a, b) else cel_compare("_>_", a, b)


def ge(a: Any, b: Any) -> bool:
    return a >= b if _fast_order(a, b) else cel_compare("_>=_", a, b)


class ErrorValue:
    """A CEL error as a value, for generated conditions decided three-valued (True, False or an error).

    ``ERR``: an error that reads as an absent field (an absent field or label, a null operand);
    ``TYPE_ERR``: any other (a string compared with a number). Generated code counts them
    as the exact path would, without raising.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name


ERR: Any = ErrorValue("ERR")
TYPE_ERR: Any = ErrorValue("TYPE_ERR")


def _order3(op: str, a: Any, b: Any) -> Any:
    if a is MISSING or b is MISSING:
        raise MissingFieldError("field is missing")
    ka, kb = _kind(a), _kind(b)
    # The types cel_compare refuses, decided without raising.
    if (ka is not kb and not (ka in NUMERIC and kb in NUMERIC)) or (ka is kb and ka not in _ORDERED):
        return ERR if a is None or b is None else TYPE_ERR
    return cel_compare(op, a, b)


def lt3(a: Any, b: Any) -> Any:
    """``a < b`` as CEL says, or ``ERR`` / ``TYPE_ERR`` where CEL has no overload (never raises for that)."""
    return a < b if _fast_order(a, b) else _order3("_<_", a, b)


def le3(a: Any, b: Any) -> Any:
    return a <= b if _fast_order(a, b) else _order3("_<=_", a, b)


def gt3(a: Any, b: Any) -> Any:
    return a > b if _fast_order(a, b) else _order3("_>_", a, b)


def ge3(a: Any, b: Any) -> Any:
    return a >= b if _fast_order(a, b) else _order3("_>=_", a, b)


_TIMES = (datetime, timedelta)


def _arith3(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``fn(a, b)``, or the error value where CEL has no overload for the operands (an error operand passes on)."""
    if a is MISSING or b is MISSING:
        raise MissingFieldError("field is missing")
    ca, cb = a.__class__, b.__class__
    if ca is ErrorValue:
        return a
    if cb is ErrorValue:
        return b
    if ca is not cb and not (ca in _TIMES and cb in _TIMES):
        return ERR if a is None or b is None else TYPE_ERR  # CEL has no mixed-type arithmetic
    try:
        return fn(a, b)
    except NoOverloadError:
        return ERR if a is None or b is None else TYPE_ERR


def add3(a: Any, b: Any) -> Any:
    """``a + b`` for a value expression decided three-valued: CEL's value, ``ERR`` or ``TYPE_ERR``."""
    return _arith3(F.add, a, b)


def sub3(a: Any, b: Any) -> Any:
    return _arith3(F.sub, a, b)


def mul3(a: Any, b: Any) -> Any:
    return _arith3(F.mul, a, b)


def div3(a: Any, b: Any) -> Any:
    return _arith3(F.div, a, b)


def mod3(a: Any, b: Any) -> Any:
    return _arith3(F.mod, a, b)


def contains_in(elem: Any, container: Any) -> bool:
    if elem is MISSING:
        raise MissingFieldError("field is missing")
    return F.contains_in(elem, container)


def iter_range(v: Any) -> Any:
    """The range of a comprehension macro: a list (its elements) or a map (its keys)."""
    c = v.__class__
    if (c is list or c is dict or c is tuple) and len(v) <= MAX_ITERATIONS:
        return v
    # Too long a range: the exact evaluator counts its steps and turns the excess into a rule error.
    raise NeedsExactEvaluation(f"macro range is {type_name(v)} of {len(v) if c in (list, dict, tuple) else 1} items")


def make_map(entries: tuple[tuple[Any, Any], ...]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, v in entries:
        kc = k.__class__
        if kc is not str and kc is not int and kc is not UInt and kc is not bool:
            raise CELEvalError(f"unsupported map key type {type_name(k)}")
        if map_get(out, k)[0] or v is MISSING:
            raise NeedsExactEvaluation("repeated key or missing value")
        out[k] = v
    return out


str_contains = str.__contains__
