"""The validated policy: frozen specs the engine compiles.

Everything here is inert data (no I/O except `EnricherSpec.build`, the
factory of the runtime enricher). Each spec has ``.loc``: where it was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelabel.errors import PolicyIssue

from . import label_types
from ._yaml import Loc

if TYPE_CHECKING:
    from activelabel.enrich import Enricher

LABEL_TYPES = label_types.LABEL_TYPES
RESOLVE_MODES = ("first_match", "max_confidence", "vote")
SENSITIVITIES = ("public", "internal", "pii", "secret")
MODEL_TYPES = ("sklearn", "onnx", "river")
ENRICHER_TYPES = ("lookup", "cidr", "pii", "novelty")
BELOW_CONFIDENCE = ("abstain", "nearest-template")
LOOKUP_FORMATS = ("csv", "json", "jsonl", "sqlite")
RESERVED_NAMES = ("event", "labels", "now")
API_VERSION = "activelabel/v1"
KIND = "Policy"


@dataclass(frozen=True)
class Expr:
    """A CEL expression: its source text, parsed AST (None if the CEL package is unavailable) and position."""

    source: str
    ast: Any = field(default=None, compare=False, repr=False)
    loc: Loc = field(default=Loc("", 0, 0), compare=False)

    def __str__(self) -> str:
        return self.source


@dataclass(frozen=True)
class Metadata:
    """``metadata:`` — descriptive; ``version`` is appended to the policy version."""

    name: str | None = None
    version: str | None = None
    owner: str | None = None
    description: str | None = None
    loc: Loc = field(default=Loc("", 0, 0), compare=False)


@dataclass(frozen=True)
class LabelSpec:
    """One label of the registry. ``index`` is its declaration (= evaluation) order."""

    name: str
    type: str
    values: tuple[str, ...] | None = None
    open: bool = False  # enum only: values beyond `values` are learned (from review, models, rules)
    default: Any = None
    has_default: bool = False
    resolve: str = "first_match"
    description: str | None = None
    owner: str | None = None
    sensitivity: str = "internal"
    protect: ProtectSpec | None = None  # None: the sensitivity's default treatment (activelabel.governance)
    max_cardinality: int | None = None
    overflow: str = "__other__"
    window: float | None = None
    bucket_from: Expr | None = None
    bounds: tuple[float, ...] = ()
    bound_texts: tuple[str, ...] = ()
    bucket_names: tuple[str, ...] = ()
    loc: Loc = field(default=Loc("", 0, 0), compare=False)
    index: int = 0

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this label (type, enum, bucket name)."""
        return label_types.label_fits(self, value)

    def bucket_of(self, number: float) -> str:
        """The bucket name of ``number`` (bucket labels only): ``<b0``, ``b0-b1``, ..., ``>=bn``."""
        return label_types.bucket_of(self, number)


@dataclass(frozen=True)
class RuleSpec:
    """One rule: sets ``label`` to ``value`` (or ``value_expr``) when ``when`` holds."""

    id: str
    label: str
    value: Any = None
    value_expr: Expr | None = None
    when: Expr | None = None
    confidence: float = 1.0
    description: str | None = None
    loc: Loc = field(default=Loc("", 0, 0), compare=False)
    index: int = 0


@dataclass(frozen=True)
class EnricherSpec:
    """A ``lookup``, ``cidr``, ``pii`` or ``novelty`` enricher; `build()` makes the runtime (whole table in memory)."""

    name: str
    type: str
    file: str
    path: Path
    format: str
    key: Expr
    key_field: str | None = None
    table: str | None = None
    key_column: str | None = None
    description: str | None = None
    sha256: str = ""
    loc: Loc = field(default=Loc("", 0, 0), compare=False)
    index: int = 0
    _rows: Mapping[Any, Any] | None = field(default=None, compare=False, repr=False)

    def build(self, *, reload: bool = False) -> Enricher:
        """The runtime enricher (`LookupEnricher` or `CidrEnricher`).

        Reuses the table read when the policy was loaded (the one its version
        hashes) unless ``reload``.
        """
        from activelabel.enrich import build_enricher, read_table

        rows = self._rows
        if self.type != "pii" and (rows is None or reload):
            rows = read_table(self)
        return build_enricher(self.type, self.name, rows or {})


@dataclass(frozen=True)
class ModelSpec:
    """A model labeler (loaded by ``activelabel.models``); shape-checked here."""

    name: str
    label: str
    type: str
    path: Path
    path_text: str
    features: Mapping[str, Expr] = field(default_factory=dict)
    min_confidence: float = 0.0
    timeout_ms: float = 50.0
    on_error: Any = "abstain"
    #: Below ``min_confidence``: ``abstain`` (set nothing) or ``nearest-template`` (the class of the line's
    #: template when the model was trained on that template: novelty 0 in the model's novelty index).
    below_confidence: str = "abstain"
    version: str | None = None
    description: str | None = None
    breaker_failures: int | None = None  # None: the models package's default (5 failures in a row)
    breaker_cooldown_s: float | None = None  # None: the models package's default (30 s)
    loc: Loc = field(default=Loc("", 0, 0), compare=False)
    index: int = 0

    @property
    def abstains_on_error(self) -> bool:
        """True when a failing model sets nothing; otherwise ``on_error`` is the fallback value."""
        return bool(self.on_error == "abstain")


@dataclass(frozen=True)
class PolicyTest:
    """A policy unit test: labeling ``event`` must give ``expect`` (None = label absent)."""

    name: str
    event: Any
    expect: Mapping[str, Any]
    loc: Loc = field(default=Loc("", 0, 0), compare=False)
    index: int = 0


@dataclass(frozen=True, eq=False, repr=False)
class Policy:
    """A loaded, validated policy with includes merged. Build it with `load_policy`."""

    api_version: str
    kind: str
    metadata: Metadata
    labels: dict[str, LabelSpec]
    rules: list[RuleSpec]
    enrichers: list[EnricherSpec]
    models: list[ModelSpec]
    tests: list[PolicyTest]
    digest: str
    version: str
    source: str
    base_dir: Path
    files: tuple[str, ...] = ()
    """The policy files read (the top-level one first), as named in issues."""
    dependencies: tuple[Path, ...] = ()
    """Every file the loaded policy depends on (policy files, enricher tables, model artifacts), resolved: what to watch for reloads."""
    warnings: tuple[PolicyIssue, ...] = ()
    """Things that load but look unintended (a rule that never applies, a label nothing sets...)."""
    canonical_json: bytes = field(default=b"", repr=False)
    outputs: OutputsSpec = field(default_factory=lambda: OutputsSpec())
    """``outputs:`` - the default clearance of every output that does not set its own."""
    redact: RedactSpec | None = None
    """``redact:`` - redaction of events on their way out (None: events leave as labeled)."""
    pii: PiiSpec = field(default_factory=lambda: PiiSpec())
    """``pii:`` - user-defined detectors and scan limits."""

    def __repr__(self) -> str:
        return (
            f"Policy({self.metadata.name or self.source!r}, version={self.version!r}, labels={len(self.labels)}, "
            f"rules={len(self.rules)}, enrichers={len(self.enrichers)}, models={len(self.models)}, tests={len(self.tests)})"
        )

    def rules_for(self, label: str) -> list[RuleSpec]:
        """The rules that set ``label``, in file order."""
        return [r for r in self.rules if r.label == label]

    def enricher(self, name: str) -> EnricherSpec:
        """The enricher called ``name`` (KeyError if none)."""
        for spec in self.enrichers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def canonical(self) -> dict[str, Any]:
        """The canonical form (what `digest` hashes) as plain data."""
        import orjson

        form: dict[str, Any] = orjson.loads(self.canonical_json)
        return form


def value_fits(label: LabelSpec, value: Any) -> bool:
    """Whether ``value`` is a valid constant for ``label`` (kept for callers; see `label_types.label_fits`)."""
    return label_types.label_fits(label, value)


# ---- privacy: `protect:` of a label, `outputs:`, `redact:` and `pii:` sections ----

PROTECT_KINDS = ("pseudonymize", "mask", "drop", "keep")
REDACT_SUMMARIES = ("silent", "info")
DEFAULT_MARKER = "[masked]"
DEFAULT_MAX_SCAN_CHARS = 65536


@dataclass(frozen=True)
class ProtectSpec:
    """A label's ``protect:``: what an output not cleared for it writes instead of the value."""

    kind: str
    marker: str = DEFAULT_MARKER
    keep_prefix: int = 0
    keep_suffix: int = 0
    loc: Loc = field(default=Loc("", 0, 0), compare=False)


@dataclass(frozen=True)
class OutputsSpec:
    """``outputs: {clearance: internal}`` - what outputs without their own clearance may show in clear."""

    clearance: str = "internal"
    loc: Loc = field(default=Loc("", 0, 0), compare=False)


@dataclass(frozen=True)
class DetectorSpec:
    """A user-defined PII detector: an RE2 pattern reported as ``entity`` with ``score``."""

    entity: str
    pattern: str
    score: float = 0.5
    loc: Loc = field(default=Loc("", 0, 0), compare=False)


@dataclass(frozen=True)
class PiiSpec:
    """``pii:`` - user-defined detectors, the scan limit per field, the undeclared-PII sample rate."""

    detectors: tuple[DetectorSpec, ...] = ()
    max_scan_chars: int = DEFAULT_MAX_SCAN_CHARS
    undeclared_sample: float = 1.0


@dataclass(frozen=True)
class RedactSpec:
    """``redact:``, after the OTel Collector's redaction processor (see docs/policy.md)."""

    allowed_keys: tuple[str, ...] | None = None
    ignored_keys: tuple[str, ...] = ()
    blocked_values: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    treatment: str = "mask"
    marker: str = "[redacted]"
    summary: str = "silent"
    loc: Loc = field(default=Loc("", 0, 0), compare=False)
