"""activelabel: an active labeling runtime.

    >>> from activelabel import Labeler
    >>> labeler = Labeler.from_file("examples/edge/policy.yaml")
    >>> labeler.label({"status": 503, "path": "/"}).labels  # doctest: +SKIP
    {'error_class': 'server_error', ...}

The names below are the public surface; everything in a module whose name starts
with an underscore, and every other module attribute, may change.
"""

from __future__ import annotations

from typing import Any

from activelabel.errors import (
    ActiveLabelError,
    CELError,
    CELEvalError,
    CELSyntaxError,
    ConfigError,
    FeedbackError,
    InputError,
    ModelError,
    PolicyError,
    PolicyIssue,
    SinkError,
    SourceError,
    StoreError,
)

__version__ = "0.1.0"

__all__ = [
    "ActiveLabelError",
    "CELError",
    "CELEvalError",
    "CELSyntaxError",
    "ConfigError",
    "Decision",
    "DecisionStore",
    "FeedbackError",
    "InputError",
    "Labeler",
    "LabelerStats",
    "LabelingMiddleware",
    "LabelingSpanProcessor",
    "ModelError",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "SinkError",
    "SourceError",
    "StoreError",
    "cel",
    "load_policy",
    "load_policy_text",
]

# Imported lazily so `import activelabel` stays cheap (the CLI's --help, the error
# hierarchy on its own) and the service's dependencies load only when used.
_LAZY = {
    "Labeler": "activelabel.engine",
    "Decision": "activelabel.engine",
    "LabelerStats": "activelabel.engine",
    "Policy": "activelabel.policy",
    "load_policy": "activelabel.policy",
    "load_policy_text": "activelabel.policy",
    "DecisionStore": "activelabel.quality.store",
    "LabelingMiddleware": "activelabel.service",
    "LabelingSpanProcessor": "activelabel.service",
}


def __getattr__(name: str) -> Any:
    if name == "cel":
        import importlib

        return importlib.import_module("activelabel.cel")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'activelabel' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
