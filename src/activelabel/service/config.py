"""Inert configuration of ``activelabel serve``: validated, no I/O in the models.

Every field documents its default and unit. ``load_service_config`` is the only
place that reads a file; the models themselves never touch the disk.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from activelabel.errors import ServiceConfigError as ServiceConfigError
from activelabel.errors import config_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExtAuthzConfig(_Strict):
    """Envoy ``ext_authz`` HTTP service front door."""

    path_prefix: str = "/v1/extauthz"
    """Envoy's ``http_service.path_prefix``; the original path follows it."""
    header_prefix: str = "x-label-"
    """Labels go back as ``<header_prefix><label-name>`` headers (``_`` becomes ``-``)."""
    token_header: str = "x-activelabel-token"
    """Envoy authenticates with this header (``authorization_request.headers_to_add``),
    because the client's own ``Authorization`` header is forwarded to us untouched."""

    @field_validator("header_prefix", "token_header")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return value.lower()


class OtlpConfig(_Strict):
    """OTLP/HTTP pipeline stage."""

    attribute_prefix: str = "label."
    """Labels are written back as span / log-record attributes ``<prefix><label>``."""
    forward_endpoint: str | None = None
    """Base URL of the next OTLP/HTTP receiver (``/v1/traces`` or ``/v1/logs`` is appended);
    ``None`` returns the labeled data in the response instead."""
    forward_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds to wait for the next receiver before answering 502."""


class AdmissionConfig(_Strict):
    """Kubernetes mutating admission webhook."""

    label_key_prefix: str = "activelabel.io/"
    """Kubernetes label key of each policy label: ``<label_key_prefix><label>``."""


class StoreConfig(_Strict):
    """Where decisions are recorded so ground truth can come back on ``POST /v1/feedback``."""

    path: str | None = None
    """SQLite decision store (shared with ``activelabel label --record`` / ``feedback`` / ``report``);
    ``None`` records nothing and ``/v1/feedback`` answers 501."""
    id_field: str | None = None
    """Event field (dot path) holding the record id; ``None`` uses a hash of the event's content."""


class ServiceConfig(_Strict):
    """Everything ``activelabel serve`` can be told in ``--config``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    """Largest request body accepted, in bytes, after decompression; larger → 413."""
    max_batch_events: int = Field(default=1000, gt=0)
    """Most events in one ``{"events": [...]}`` batch; more → 413."""
    max_in_flight: int = Field(default=512, ge=0)
    """Requests being handled at once beyond which new ones get 503 + Retry-After (backpressure,
    seed F1); health, readiness and metrics are never refused. 0 = no limit."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds a connection may take to send a request line and headers (from connecting, or
    from the previous response); slower → 408 and the connection is closed."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds a request may take to send its whole body once its headers are in; slower → 408
    and the connection is closed. Only a complete body counts toward ``max_in_flight``."""
    max_connections_per_client: int = Field(default=256, ge=0)
    """Open connections one client address may hold; more → 503 and closed at once, so one
    client cannot take every connection. 0 = no limit (e.g. behind a proxy that is the only client)."""
    track_conflicts: bool = True
    """Evaluate every rule so conflicts between rules are counted (M5); costs some label latency."""
    watch_policy: bool = False
    """Reload the policy when its file changes (in addition to SIGHUP and the reload endpoint)."""
    accuracy_window_s: float = Field(default=3600.0, gt=0)
    """Seconds of ground truth the accuracy SLI (M2, ``activelabel_label_accuracy_ratio``) averages over."""
    drift_window_events: int = Field(default=1000, gt=0)
    """Decisions in each drift window (M7): the first ones after a (re)load are the reference, the latest the current."""
    drift_sample_every: int = Field(default=10, gt=0)
    """One decision in this many enters the drift windows (a sample keeps the request path cheap)."""
    tokens_env: str = "ACTIVELABEL_TOKENS"
    """Environment variable holding the token table (YAML or JSON) when ``--tokens`` is not given."""
    pseudonym_key_file: Path | None = None
    """Pseudonym keys (``<key id>=<secret>`` lines); unset: ``$ACTIVELABEL_PSEUDONYM_KEY``, else pii labels are masked."""
    ext_authz: ExtAuthzConfig = ExtAuthzConfig()
    otlp: OtlpConfig = OtlpConfig()
    admission: AdmissionConfig = AdmissionConfig()
    store: StoreConfig = StoreConfig()


def load_service_config(path: Path | str | None) -> ServiceConfig:
    """Read a ``--config`` YAML file; ``None`` gives the defaults.

    Raises ``ServiceConfigError`` naming every invalid field.
    """
    if path is None:
        return ServiceConfig()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ServiceConfigError(f"cannot read service config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ServiceConfigError(f"service config {path} must be a YAML mapping")
    try:
        return ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(ServiceConfigError, exc, f"service config {path}") from exc
