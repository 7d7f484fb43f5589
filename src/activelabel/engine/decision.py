"""The result of labeling one event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activelabel.engine.compile import CompiledPolicy


class Decision:
    """Labels for one event, with how each was decided.

    ``labels`` is a plain dict holding only the labels that are set. Confidence
    and source per label are derived on demand from compact codes the hot path
    records, so labeling stays cheap when nobody asks. A decision holds the
    compiled policy that made it (not the labeler), so it stays explainable
    after the labeler is gone or has been swapped for another policy.
    """

    __slots__ = ("_compiled", "_event", "_why", "elapsed_ns", "labels")

    def __init__(self, labels: dict[str, Any], why: dict[str, Any], compiled: CompiledPolicy, event: Any,
                 elapsed_ns: int) -> None:
        self.labels = labels
        self._why = why
        self._compiled = compiled
        self._event = event
        self.elapsed_ns = elapsed_ns

    @property
    def policy_version(self) -> str:
        return self._compiled.version

    @property
    def policy(self) -> Any:
        """The policy that made this decision (its labels' sensitivity, its ``redact:``)."""
        return self._compiled.policy

    @property
    def confidences(self) -> dict[str, float]:
        """Per label set: the confidence of its value (0.0 for a default: no evidence; 1.0 for a bucket)."""
        table = self._compiled.source_table
        out: dict[str, float] = {}
        for name, code in self._why.items():
            if code.__class__ is tuple:
                out[name] = code[1]
            else:
                out[name] = table[code][1]
        return out

    @property
    def sources(self) -> dict[str, str]:
        """Per label set: ``rule:<id>``, ``model:<name>@<version>``, ``enricher:<name>``, ``bucket`` or ``default``."""
        table = self._compiled.source_table
        out: dict[str, str] = {}
        for name, code in self._why.items():
            idx = code[0] if code.__class__ is tuple else code
            out[name] = table[idx][0]
        return out

    def explain(self) -> dict[str, Any]:
        """Per label: value, confidence, source, the rules that matched and those that lost.

        Rules are re-evaluated exactly (without touching the labeler's counters) to
        list every match; the value shown is the one this decision returned. CEL's
        ``now`` comes from the labeler's injected clock, as it did for the decision.
        """
        return self._compiled.explain(self)

    def __repr__(self) -> str:
        return f"Decision(labels={self.labels!r}, policy_version={self.policy_version!r})"
