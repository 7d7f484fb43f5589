"""How labels leave the process: who may see them, and how each wire spells them.

``secret`` labels reach only callers cleared for ``secret``. Each front door then
renders the surviving labels in its own syntax: HTTP header values, OTLP
attribute values, Kubernetes label values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from activelabel.policy import label_types
from activelabel.service.auth import Caller


def visible_labels(labels: Mapping[str, Any], secret_labels: frozenset[str], caller: Caller) -> dict[str, Any]:
    """The labels ``caller`` may see: ``secret`` ones only with the ``secret`` clearance."""
    if not secret_labels or "secret" in caller.clearances:
        return dict(labels)
    return {name: value for name, value in labels.items() if name not in secret_labels}


def visible_explain(explain: Mapping[str, Any], secret_labels: frozenset[str], caller: Caller) -> dict[str, Any]:
    """``Decision.explain()`` without the entries of labels the caller may not see."""
    if not secret_labels or "secret" in caller.clearances:
        return dict(explain)
    out = dict(explain)
    per_label = explain.get("labels")
    if isinstance(per_label, Mapping):
        out["labels"] = {n: v for n, v in per_label.items() if n not in secret_labels}
    return out


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
