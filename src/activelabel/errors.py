"""The one error hierarchy of activelabel.

    ActiveLabelError
    ├── CELError
    │   ├── CELSyntaxError      expression does not parse (line, column, caret excerpt)
    │   └── CELEvalError        evaluation failed (no such key, overflow, no matching overload…)
    ├── PolicyError             a policy was refused; carries every PolicyIssue at once
    ├── InputError              one input record could not be decoded / labeled (goes to the DLQ)
    ├── SourceError             a source (file, stdin, HTTP, Kafka) failed as a whole
    ├── SinkError               a sink could not be written
    ├── ModelError              a model artifact failed to load or predict
    ├── StoreError              the decision / ground-truth store failed
    ├── FeedbackError           ground truth refused (unknown id, label or value)
    └── LoopError               the active loop cannot start or go on (its policy, data or answers)

Third-party errors are translated at the boundary: ``raise X(...) from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ActiveLabelError(Exception):
    """Root of every error activelabel raises on purpose."""


class CELError(ActiveLabelError):
    """Base for errors of the expression language."""


class CELSyntaxError(CELError):
    """An expression that does not parse.

    ``line`` and ``column`` are 1-based within the expression text; ``excerpt``
    is the offending line with a caret under the spot.
    """

    def __init__(self, message: str, *, expr: str = "", line: int = 1, column: int = 1) -> None:
        self.message = message
        self.expr = expr
        self.line = line
        self.column = column
        super().__init__(self._format())

    @property
    def excerpt(self) -> str:
        lines = self.expr.splitlines() or [""]
        text = lines[min(self.line, len(lines)) - 1]
        return f"{text}\n{' ' * (self.column - 1)}^"

    def _format(self) -> str:
        return f"{self.message} at line {self.line}, column {self.column}\n{self.excerpt}"


class CELEvalError(CELError):
    """Evaluation of a CEL expression failed (CEL's runtime error value)."""


@dataclass(frozen=True)
class PolicyIssue:
    """One problem found in a policy: where it is and what to do about it."""

    message: str
    file: str = ""
    line: int = 0
    column: int = 0
    rule_id: str | None = None
    suggestion: str | None = None
    excerpt: str | None = None  # caret excerpt for CEL errors

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.file else f"{self.line}:{self.column}"
        head = f"{where}: "
        if self.rule_id:
            head += f"rule {self.rule_id}: "
        text = head + self.message
        if self.suggestion:
            text += f" ({self.suggestion})"
        if self.excerpt:
            text += "\n" + "\n".join("    " + ln for ln in self.excerpt.splitlines())
        return text


@dataclass
class PolicyError(ActiveLabelError):
    """A policy was refused. ``issues`` lists every problem at once."""

    issues: list[PolicyIssue] = field(default_factory=list)

    def __str__(self) -> str:
        n = len(self.issues)
        head = f"policy refused: {n} error{'s' if n != 1 else ''}"
        return head + "\n" + "\n".join(i.format() for i in self.issues)


class InputError(ActiveLabelError):
    """One input record cannot be labeled; the reason goes to the dead-letter output."""

    def __init__(self, reason: str, *, kind: str = "invalid") -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)


class SourceError(ActiveLabelError):
    """A source failed as a whole (file missing, broker unreachable…)."""


class SinkError(ActiveLabelError):
    """A sink could not be written."""


class ModelError(ActiveLabelError):
    """A model artifact could not be loaded or failed to predict."""


class StoreError(ActiveLabelError):
    """The decision / ground-truth store failed."""


class FeedbackError(ActiveLabelError):
    """Ground truth was refused: unknown id, unknown label, or a value outside the label's type."""


class LoopError(ActiveLabelError):
    """The active loop cannot start or go on: its policy lacks the label or already has a model for it,
    or its data or answers cannot be read."""


__all__ = [
    "ActiveLabelError",
    "CELError",
    "CELEvalError",
    "CELSyntaxError",
    "FeedbackError",
    "InputError",
    "LoopError",
    "ModelError",
    "PolicyError",
    "PolicyIssue",
    "SinkError",
    "SourceError",
    "StoreError",
]
