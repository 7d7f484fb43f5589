"""Policies: the label registry, the rules and enrichers that set labels, and their tests.

    from activelabel.policy import load_policy
    policy = load_policy("policy.yaml")   # PolicyError(issues=[...]) listing every problem
    policy.labels["priority"].values      # ("critical", "high", "normal", "low")
    policy.rules[0].when.source           # 'event.status >= 500'
    policy.version                        # "sha256:<hex>/7"
    policy.warnings                       # loads, but looks unintended (dead rules, unset labels...)

    diff_policies(old, new).format()      # what changed between two versions
    policy_json_schema()                  # JSON Schema of the format, for editors

Modules: ``_yaml`` (positioned YAML), ``_build`` (one file's shape), ``_load``
(files and includes), ``_merge`` (checks over the merged policy), ``_lint``
(warnings), ``_canonical`` (digest and version), ``_spec`` (the frozen specs).
See docs/policy.md for the format.
"""

from . import label_types
from ._canonical import canonical_form
from ._diff import Change, PolicyDiff, diff_policies
from ._files import ALLOW_PATHS_ENV, MAX_POLICY_FILE_BYTES, MAX_TABLE_FILE_BYTES, READ_TIMEOUT_S
from ._load import load_policy, load_policy_text
from ._schema import policy_json_schema
from ._spec import (
    API_VERSION,
    LABEL_TYPES,
    RESERVED_NAMES,
    RESOLVE_MODES,
    SENSITIVITIES,
    EnricherSpec,
    Expr,
    LabelSpec,
    Metadata,
    ModelSpec,
    Policy,
    PolicyTest,
    RuleSpec,
    value_fits,
)
from ._suggest import closest, did_you_mean
from ._yaml import Loc

__all__ = [
    "ALLOW_PATHS_ENV",
    "API_VERSION",
    "Change",
    "EnricherSpec",
    "Expr",
    "LABEL_TYPES",
    "LabelSpec",
    "Loc",
    "MAX_POLICY_FILE_BYTES",
    "MAX_TABLE_FILE_BYTES",
    "Metadata",
    "ModelSpec",
    "Policy",
    "PolicyDiff",
    "PolicyTest",
    "READ_TIMEOUT_S",
    "RESERVED_NAMES",
    "RESOLVE_MODES",
    "RuleSpec",
    "SENSITIVITIES",
    "canonical_form",
    "closest",
    "did_you_mean",
    "diff_policies",
    "label_types",
    "load_policy",
    "load_policy_text",
    "policy_json_schema",
    "value_fits",
]
