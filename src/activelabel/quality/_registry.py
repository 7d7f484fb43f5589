"""What the store knows of a policy's labels, so it can check feedback without the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activelabel.errors import FeedbackError


def _bucket_names(bounds: list[Any]) -> list[str]:
    def fmt(b: Any) -> str:
        return str(int(b)) if isinstance(b, float) and b.is_integer() else str(b)

    if not bounds:
        return []
    names = [f"<{fmt(bounds[0])}"]
    names += [f"{fmt(a)}-{fmt(b)}" for a, b in zip(bounds, bounds[1:])]
    names.append(f">={fmt(bounds[-1])}")
    return names


@dataclass
class LabelInfo:
    type: str = "string"
    values: list[Any] | None = None


@dataclass
class LabelRegistry:
    """Per label: its type and allowed values; per rule: its constant value (for conflict counts)."""

    labels: dict[str, LabelInfo] = field(default_factory=dict)
    rule_values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"labels": {k: {"type": v.type, "values": v.values} for k, v in self.labels.items()},
                "rule_values": self.rule_values}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelRegistry:
        return cls({k: LabelInfo(v.get("type", "string"), v.get("values")) for k, v in data.get("labels", {}).items()},
                   dict(data.get("rule_values", {})))

    def check(self, label: str, value: Any) -> Any:
        """The value coerced to the label's type, or FeedbackError with the reason."""
        info = self.labels.get(label)
        if info is None:
            raise FeedbackError(f"unknown label {label!r}; the policy declares: {', '.join(self.labels) or 'none'}")
        kind = info.type
        if kind in ("enum", "bucket"):
            for allowed in info.values or []:
                if value == allowed or str(value) == str(allowed):
                    return allowed
            raise FeedbackError(f"value {value!r} is outside label {label!r}'s values: "
                                f"{', '.join(map(str, info.values or []))}")
        try:
            if kind == "bool":
                if isinstance(value, bool):
                    return value
                if str(value).lower() in ("true", "false"):
                    return str(value).lower() == "true"
                raise ValueError
            if kind == "int":
                if isinstance(value, bool):
                    raise ValueError
                return int(value) if isinstance(value, int) or str(value).lstrip("-").isdigit() else _fail()
            if kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                return float(value)
        except (TypeError, ValueError):
            raise FeedbackError(f"value {value!r} is not a valid {kind} for label {label!r}") from None
        if value is None:
            raise FeedbackError(f"label {label!r} needs a value")
        return value if isinstance(value, str) else str(value)


def _fail() -> Any:
    raise ValueError


def registry_from_policy(policy: Any) -> LabelRegistry:
    """Read label types and enums (and constant rule values) from a loaded policy."""
    labels: dict[str, LabelInfo] = {}
    for name, spec in (getattr(policy, "labels", None) or {}).items():
        raw = getattr(spec, "type", None) or "string"
        kind = str(getattr(raw, "value", raw))
        values = getattr(spec, "values", None)
        if kind == "bucket":
            values = _bucket_names(list(getattr(spec, "bounds", None) or []))
        labels[name] = LabelInfo(kind, list(values) if values else None)
    rule_values = {}
    for rule in getattr(policy, "rules", None) or []:
        if getattr(rule, "value", None) is not None:
            rule_values[str(rule.id)] = rule.value
    return LabelRegistry(labels, rule_values)
