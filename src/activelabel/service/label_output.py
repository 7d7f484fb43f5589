"""How labels leave the process: who may see them, and how each wire spells them.

A caller's clearance is the highest of its token's ``clearances`` (``pii``,
``secret``), ``internal`` without any. Labels above it leave only as their
``protect:`` treatment (pseudonym, mask) or not at all
(`activelabel.governance.sensitivity`). Each front door then renders the
surviving labels in its own syntax: HTTP header values, OTLP attribute
values, Kubernetes label values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from activelabel.governance.sensitivity import Clearance, protect_explain, protect_labels
from activelabel.policy import label_types
from activelabel.service.auth import Caller

if TYPE_CHECKING:
    from activelabel.service.policy_runtime import PolicySnapshot


def clearance_of(caller: Caller) -> Clearance:
    """The caller's clearance: its highest granted level, ``internal`` when it has none."""
    return Clearance.of_grants(caller.clearances)


def visible_labels(labels: Mapping[str, Any], snapshot: PolicySnapshot, caller: Caller) -> dict[str, Any]:
    """The labels as ``caller`` may see them: in clear up to its clearance, treated or left out above it."""
    return protect_labels(labels, snapshot.registry, clearance_of(caller), snapshot.protector)


def visible_explain(explain: Mapping[str, Any], snapshot: PolicySnapshot, caller: Caller) -> dict[str, Any]:
    """``Decision.explain()`` with the values of labels above the caller's clearance treated (or the entry left out)."""
    return protect_explain(explain, snapshot.registry, clearance_of(caller), snapshot.protector)


text_of = label_types.value_text
"""A label value as text: ``true``/``false`` for booleans, plain ``str`` otherwise (see `label_types.value_text`)."""


def header_name(prefix: str, label: str) -> str:
    """``x-label-tenant-tier`` for label ``tenant_tier``: proxies often drop header names with ``_``."""
    return prefix + label.replace("_", "-").lower()


# Header values must be visible ASCII; anything else is percent-encoded (RFC 3986 unreserved kept).
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%")


def header_value(value: Any) -> str:
    text = text_of(value)
    # Fast path: most label values are plain visible ASCII already.
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return quote(text, safe=_HEADER_SAFE + " ")


_K8S_VALUE_MAX = 63
_K8S_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")
_K8S_EDGE = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")
# Bucket labels read "<100", "100-500", ">=1000": keep the comparison's meaning.
_COMPARATORS = (("<=", "le-"), (">=", "ge-"), ("<", "lt-"), (">", "gt-"))


def k8s_label_value(value: Any) -> str | None:
    """A valid Kubernetes label value for ``value``, or ``None`` when nothing valid remains.

    Rules: at most 63 characters from ``[A-Za-z0-9_.-]``, starting and ending
    alphanumeric (empty is valid but carries nothing, so it is dropped).
    """
    text = text_of(value)
    for comparator, word in _COMPARATORS:
        if text.startswith(comparator):
            text = word + text[len(comparator):]
            break
    text = _K8S_INVALID.sub("-", text)
    text = _K8S_EDGE.sub("", text)
    text = _K8S_EDGE.sub("", text[:_K8S_VALUE_MAX])
    return text or None


def json_pointer_token(key: str) -> str:
    """Escape a map key for a JSON Pointer (RFC 6901): ``~`` → ``~0``, ``/`` → ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")
