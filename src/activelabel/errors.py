"""The one error hierarchy of activelabel.

    ActiveLabelError
    ├── CELError
    │   ├── CELSyntaxError      expression does not parse (line, column, caret excerpt)
    │   └── CELEvalError        evaluation failed (no such key, overflow, no matching overload…)
    │       ├── NoOverloadError no function of that name takes these argument types (message built on demand)
    │       └── RuleValueError  a rule computed a value its label does not take (counted as a rule error)
    ├── PolicyError             a policy was refused; carries every PolicyIssue at once
    ├── ConfigError             a configuration was refused; names each field, its problem, what to do
    │   ├── ServiceConfigError  `activelabel serve --config` is missing, unreadable or invalid
    │   ├── StreamConfigError   the Kafka stream worker's settings are invalid
    │   └── AuthConfigError     the token table is missing, unreadable or names an unknown scope
    ├── EnricherError           an enricher's table cannot be read (with a suggestion)
    ├── InputError              one input record could not be decoded / labeled (goes to the DLQ)
    ├── SourceError             a source (file, stdin, HTTP, Kafka) failed as a whole
    ├── SinkError               a sink could not be written
    │   └── ValueTooLarge       the broker or producer refuses a message of this size
    ├── ModelError              a model artifact failed to load or predict
    ├── StoreError              the decision / ground-truth store failed
    ├── FeedbackError           ground truth refused (unknown id, label or value)
    ├── NotReadyError           the service has no policy loaded yet
    ├── PseudonymKeyError       a named pseudonym key is missing, unreadable or too short
    ├── MissingExtraError       a feature needs an optional extra that is not installed (also an ImportError)
    ├── SLOSpecError            an SLO spec for `ops rules` is unreadable or invalid
    ├── AuditError              the audit log cannot be written, read or verified
    ├── RolloutError            a rollout spec was refused, or a rollout cannot start or resume
    │   ├── RolloutConflictError  the rollout's state forbids the action (already finished, another running)
    │   └── PolicyNotKnownError a rollback names a version this process never compiled
    └── LoopError               the active loop cannot start or go on (its policy, data or answers)

Third-party errors are translated at the boundary: ``raise X(...) from exc``
(pydantic's ``ValidationError`` becomes a ``ConfigError`` through
:func:`config_error`). ``ConfigError`` is also a ``ValueError``, as pydantic's
error was, so code that caught that still catches it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TypeVar

if TYPE_CHECKING:
    from pydantic import ValidationError


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


class NoOverloadError(CELEvalError):
    """``no such overload: fn(type, ...)``: a function given argument types it has no overload for.

    The commonest CEL error on real telemetry (a string where a number was expected), so
    the message is built only when someone reads it: the hot path counts the error and
    moves on. ``operands`` are the values given; ``null_operand`` says whether one was
    null (then the error reads as an absent field).
    """

    #: CEL's name of a value's type; the expression language sets it when it loads (errors
    #: come first in the import order, so this module cannot import it).
    type_name: ClassVar[Callable[[object], str]] = staticmethod(lambda v: type(v).__name__)

    def __init__(self, function: str, operands: tuple[object, ...]) -> None:
        super().__init__(function, operands)
        self.function = function
        self.operands = operands

    @property
    def null_operand(self) -> bool:
        return any(o is None for o in self.operands)

    def __str__(self) -> str:
        return f"no such overload: {self.function}({', '.join(NoOverloadError.type_name(a) for a in self.operands)})"


class RuleValueError(CELEvalError):
    """A rule produced a value that does not fit its label."""


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
    """A policy was refused. ``issues`` lists every problem at once.

    ``candidate_version`` is the refused policy's version when it did load (its own tests failed).
    """

    issues: list[PolicyIssue] = field(default_factory=list)
    candidate_version: str | None = None

    def __str__(self) -> str:
        n = len(self.issues)
        head = f"policy refused: {n} error{'s' if n != 1 else ''}"
        return head + "\n" + "\n".join(i.format() for i in self.issues)


@dataclass(frozen=True)
class ConfigProblem:
    """One refused setting: where it is (dotted path, empty for the whole), what is wrong, what to do."""

    field: str
    problem: str
    fix: str = ""

    def format(self) -> str:
        text = f"{self.field}: {self.problem}" if self.field else self.problem
        return f"{text} ({self.fix})" if self.fix else text


class ConfigError(ActiveLabelError, ValueError):
    """A configuration was refused; ``problems`` names each bad field at once."""

    def __init__(self, message: str, *, problems: Sequence[ConfigProblem] = ()) -> None:
        self.message = message
        self.problems = tuple(problems)
        super().__init__(message)


class ServiceConfigError(ConfigError):
    """The service configuration file is missing, unreadable or invalid."""


class StreamConfigError(ConfigError):
    """The stream worker's settings are invalid."""


class AuthConfigError(ConfigError):
    """The token table is missing, unreadable or names an unknown scope."""


class EnricherError(ActiveLabelError):
    """An enricher's table cannot be read; ``suggestion`` says what to do."""

    def __init__(self, message: str, *, suggestion: str | None = None) -> None:
        self.message = message
        self.suggestion = suggestion
        super().__init__(message)


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


class ValueTooLarge(SinkError):
    """The broker or producer refuses a message of this size (``MSG_SIZE_TOO_LARGE``)."""


class ModelError(ActiveLabelError):
    """A model artifact could not be loaded or failed to predict."""


class StoreError(ActiveLabelError):
    """The decision / ground-truth store failed."""


class FeedbackError(ActiveLabelError):
    """Ground truth was refused: unknown id, unknown label, or a value outside the label's type."""


class NotReadyError(ActiveLabelError):
    """No policy has been loaded yet."""


_C = TypeVar("_C", bound=ConfigError)

# What to do about each kind of pydantic problem; the default covers value checks.
_FIXES = {
    "extra_forbidden": "remove it, or check its spelling against the documented fields",
    "missing": "set it",
}


def config_error(cls: type[_C], exc: ValidationError, what: str) -> _C:
    """``exc`` (pydantic's) as our ``cls``: ``invalid <what>: <field>: <problem> (<what to do>); ...``.

    Every problem is kept, in pydantic's order, with pydantic's own wording of
    the problem (minus its ``Value error, `` prefix) so nothing is lost.
    """
    problems = [
        ConfigProblem(
            ".".join(str(p) for p in err["loc"]),
            err["msg"].removeprefix("Value error, "),
            _FIXES.get(err["type"], "" if err["type"] == "value_error" else "give a value of the documented type and range"),
        )
        for err in exc.errors()
    ]
    return cls(f"invalid {what}: " + "; ".join(p.format() for p in problems), problems=problems)


class PseudonymKeyError(ActiveLabelError):
    """A pseudonym key was named (``--pseudonym-key-file``, ``ACTIVELABEL_PSEUDONYM_KEY``) but cannot be used.

    Raised at start: nothing ever falls back to clear text or an unkeyed hash.
    """


__all__ = [
    "NoOverloadError",
    "ActiveLabelError",
    "AuditError",
    "AuthConfigError",
    "CELError",
    "CELEvalError",
    "CELSyntaxError",
    "ConfigError",
    "ConfigProblem",
    "EnricherError",
    "FeedbackError",
    "InputError",
    "LoopError",
    "MissingExtraError",
    "ModelError",
    "NotReadyError",
    "PolicyError",
    "PolicyIssue",
    "PolicyNotKnownError",
    "PseudonymKeyError",
    "RolloutConflictError",
    "RolloutError",
    "RuleValueError",
    "SLOSpecError",
    "ServiceConfigError",
    "SinkError",
    "SourceError",
    "StoreError",
    "StreamConfigError",
    "ValueTooLarge",
    "config_error",
]


class MissingExtraError(ActiveLabelError, ImportError):
    """A feature needs an optional dependency group (``pip install 'activelabel[EXTRA]'``) that is absent.

    ``extra`` names the group, ``module`` the module that could not be imported.
    """

    def __init__(self, message: str, *, extra: str, module: str) -> None:
        super().__init__(message)
        self.extra = extra
        self.module = module


class SLOSpecError(ActiveLabelError):
    """An SLO spec (``activelabel ops rules --slo``) is unreadable or invalid; the message names every field."""


class AuditError(ActiveLabelError):
    """The decision audit log could not be written, read or verified (bad key, broken record)."""


class RolloutError(ActiveLabelError):
    """A rollout spec was refused, or a rollout cannot start or resume (every problem in the message).

    ``problems`` lists a refused spec's problems one by one, each led by its field path
    (``analysis[0].max: ...``), for an API error body or one CLI line each.
    """

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class RolloutConflictError(RolloutError):
    """The rollout is not in a state that allows the action (another is running, or it already finished)."""


class PolicyNotKnownError(RolloutError):
    """A rollback names a policy version this process has not compiled (the message lists those it has)."""


class LoopError(ActiveLabelError):
    """The active loop cannot start or go on: its policy lacks the label or already has a model for it,
    or its data or answers cannot be read."""
