"""What the store knows of a policy's labels, so it can check feedback without the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from activelabel.errors import FeedbackError
from activelabel.policy import label_types

if TYPE_CHECKING:
    from activelabel.policy import Policy


@dataclass
class LabelInfo:
    """One label as the store keeps it: its type and, for enum and bucket labels, the names it takes."""

    type: str = "string"
    values: list[Any] | None = None
    # Privacy: what a reader of the store (report, review export) may see; a store written
    # before sensitivity was kept reads as internal, unless the command is given the policy.
    sensitivity: str = "internal"
    protect: dict[str, Any] | None = None


@dataclass
class LabelRegistry:
    """Per label: its type and allowed values; per rule: its constant value (for conflict counts)."""

    labels: dict[str, LabelInfo] = field(default_factory=dict)
    rule_values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"labels": {k: {"type": v.type, "values": v.values, "sensitivity": v.sensitivity, "protect": v.protect}
                           for k, v in self.labels.items()},
                "rule_values": self.rule_values}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelRegistry:
        return cls({k: LabelInfo(v.get("type", "string"), v.get("values"), v.get("sensitivity") or "internal", v.get("protect"))
                    for k, v in data.get("labels", {}).items()},
                   dict(data.get("rule_values", {})))

    def privacy_specs(self) -> dict[str, Any]:
        """Per label, an object with ``sensitivity`` and ``protect`` (for `SensitivityRegistry.of_labels`)."""
        from types import SimpleNamespace

        return {k: SimpleNamespace(sensitivity=v.sensitivity,
                                   protect=SimpleNamespace(**v.protect) if v.protect else None)
                for k, v in self.labels.items()}

    def check(self, label: str, value: Any) -> Any:
        """The value coerced to the label's type, or FeedbackError with the reason."""
        info = self.labels.get(label)
        if info is None:
            raise FeedbackError(f"unknown label {label!r}; the policy declares: {', '.join(self.labels) or 'none'}")
        kind = info.type
        try:
            return label_types.parse_value(kind, value, info.values)
        except ValueError:
            if info.sensitivity in ("pii", "secret"):  # a refusal is printed and stored: never quote the value
                raise FeedbackError(f"the value is not a valid {kind} for label {label!r} (declared {info.sensitivity}: not quoted)") from None
            if kind in label_types.CHOICE_TYPES:
                raise FeedbackError(f"value {value!r} is outside label {label!r}'s values: "
                                    f"{', '.join(map(str, info.values or []))}") from None
            if kind in ("bool", "int", "float"):
                raise FeedbackError(f"value {value!r} is not a valid {kind} for label {label!r}") from None
            raise FeedbackError(f"label {label!r} needs a value") from None


def registry_from_policy(policy: Policy) -> LabelRegistry:
    """Read label types and the names choice labels take (and constant rule values) from a loaded policy.

    Bucket names are the policy's own (`LabelSpec.bucket_names`, built from the
    bounds as written), so feedback accepts exactly the values the label produces.
    """
    labels: dict[str, LabelInfo] = {}
    for name, spec in policy.labels.items():
        values = label_types.allowed_values(spec)
        protect = getattr(spec, "protect", None)
        labels[name] = LabelInfo(spec.type, list(values) if values else None, str(spec.sensitivity),
                                 None if protect is None else {"kind": protect.kind, "marker": protect.marker,
                                                               "keep_prefix": protect.keep_prefix, "keep_suffix": protect.keep_suffix})
    rule_values = {str(rule.id): rule.value for rule in policy.rules if rule.value is not None}
    return LabelRegistry(labels, rule_values)
