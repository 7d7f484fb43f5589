"""activelabel as a service: HTTP sidecar, ext_authz, OTLP stage, admission webhook, SDK hooks.

See docs/service.md. Public surface::

    from activelabel.service import create_app, ServiceConfig, LabelingMiddleware, LabelingSpanProcessor
"""

from activelabel.service import _needs_extra  # noqa: F401  (first: names the missing extra)
from activelabel.service.app import LabelService, create_app
from activelabel.service.auth import (
    AuthConfigError,
    Caller,
    TokenTable,
    load_token_table,
    parse_token_table,
)
from activelabel.service.config import (
    ServiceConfig,
    ServiceConfigError,
    load_service_config,
)
from activelabel.service.middleware import LabelingMiddleware
from activelabel.service.policy_runtime import (
    PolicyRuntime,
    PolicySnapshot,
    ReloadOutcome,
)
from activelabel.service.span_processor import LabelingSpanProcessor

__all__ = [
    "AuthConfigError",
    "Caller",
    "LabelService",
    "LabelingMiddleware",
    "LabelingSpanProcessor",
    "PolicyRuntime",
    "PolicySnapshot",
    "ReloadOutcome",
    "ServiceConfig",
    "ServiceConfigError",
    "TokenTable",
    "create_app",
    "load_service_config",
    "load_token_table",
    "parse_token_table",
]
