"""Governance: what may leave the process, and in which form.

* `sensitivity` - the one home for sensitivity levels, `Clearance` and
  `protect_labels` / `protect_value` (every output calls them).
* `protect` - the treatments (keyed pseudonyms ``hm1:<key id>:...``, masks,
  drop) and the pseudonym keys.
* `pii` - RE2 PII detectors with validators, Presidio's result shape.
* `redact` - the policy's ``redact:`` section over whole events.
* `output` - `OutputGuard`, the single call an output loop makes per record.
* `m9` - the leak counters (declared, undeclared, canary recall).

Future home of policy history, rollout and the audit log.
"""

from activelabel.governance.m9 import PrivacyCounters
from activelabel.governance.output import GuardedRecord, OutputGuard, audit_privacy, sensitive_inputs_of
from activelabel.governance.pii import BUILTIN_ENTITIES, VALIDATED, PiiScanner, RecognizerResult
from activelabel.governance.protect import KEY_ENV, Protector, PseudonymKey, load_keys
from activelabel.governance.redact import RedactionSummary, Redactor
from activelabel.governance.sensitivity import (
    DEFAULT_CLEARANCE,
    DROPPED,
    FULL_CLEARANCE,
    LEVELS,
    Clearance,
    LabelGuard,
    Sensitivity,
    SensitivityRegistry,
    Treatment,
    is_sensitive,
    key_use_problems,
    protect_explain,
    protect_labels,
    protect_value,
)

__all__ = [
    "BUILTIN_ENTITIES",
    "DEFAULT_CLEARANCE",
    "DROPPED",
    "FULL_CLEARANCE",
    "KEY_ENV",
    "LEVELS",
    "VALIDATED",
    "Clearance",
    "GuardedRecord",
    "LabelGuard",
    "OutputGuard",
    "PiiScanner",
    "PrivacyCounters",
    "Protector",
    "PseudonymKey",
    "RecognizerResult",
    "RedactionSummary",
    "Redactor",
    "Sensitivity",
    "SensitivityRegistry",
    "Treatment",
    "audit_privacy",
    "is_sensitive",
    "key_use_problems",
    "load_keys",
    "protect_explain",
    "protect_labels",
    "protect_value",
    "sensitive_inputs_of",
]
