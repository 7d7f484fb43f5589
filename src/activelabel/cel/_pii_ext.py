"""``pii.find(text)`` and ``pii.contains(text, entity)``: the PII detectors as CEL functions.

``pii.find(event.message)`` gives the entity types found, each once, in order
of first appearance (``["EMAIL_ADDRESS", "IP_ADDRESS"]``);
``pii.contains(event.message, "EMAIL")`` tells whether one type is present
(short names such as ``EMAIL``, ``IP``, ``CARD`` are accepted). Both use the
built-in detectors of `activelabel.governance.pii` (RE2, linear time).

``pii`` is a function namespace, as ``math`` is in cel-go: the parser turns a
call ``pii.f(...)`` on the bare name ``pii`` into the global function
``pii.f``, so the interpreter and the compiled path call the same Python
function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activelabel.cel._values import no_overload

NAMESPACES = frozenset({"pii"})


def _scanner() -> Any:
    # Imported late: the cel package must not load governance until a policy uses it.
    from activelabel.governance.pii import default_scanner

    return default_scanner()


def pii_find(text: Any) -> list[str]:
    if text.__class__ is not str:
        raise no_overload("pii.find", text)
    return list(_scanner().entities(text))


def pii_contains(text: Any, entity: Any) -> bool:
    if text.__class__ is not str or entity.__class__ is not str:
        raise no_overload("pii.contains", text, entity)
    return bool(_scanner().contains(text, entity))


PII_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "pii.find": pii_find,
    "pii.contains": pii_contains,
}
