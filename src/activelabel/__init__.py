"""activelabel: an active labeling runtime.

    >>> from activelabel import Labeler
    >>> labeler = Labeler.from_file("examples/edge/policy.yaml")
    >>> labeler.label({"request": {"path": "/"}, "status": 503}).labels  # doctest: +SKIP
    {'error_class': 'server_error', ...}
"""

from __future__ import annotations

from activelabel.errors import (
    ActiveLabelError,
    CELEvalError,
    CELSyntaxError,
    InputError,
    PolicyError,
    PolicyIssue,
    SinkError,
    SourceError,
)

__version__ = "0.1.0"

__all__ = [
    "ActiveLabelError",
    "CELEvalError",
    "CELSyntaxError",
    "Decision",
    "InputError",
    "Labeler",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "SinkError",
    "SourceError",
    "load_policy",
]


def __getattr__(name: str) -> object:
    # Imported lazily so `import activelabel` stays cheap for the CLI's --help and
    # so the error hierarchy is importable on its own.
    if name in ("Labeler", "Decision"):
        from activelabel import engine

        return getattr(engine, name)
    if name in ("Policy", "load_policy"):
        from activelabel import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'activelabel' has no attribute {name!r}")
