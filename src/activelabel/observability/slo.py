"""The SLO spec that ``activelabel ops rules --slo`` reads: objectives, burn-rate windows, alert thresholds.

Every field has a production default, so ``ops rules`` without ``--slo`` writes
rules for the seed's targets: 99% of labeling requests within 10 ms, 99.9% of
events not dead-lettered, over 30 days, with Sloth's ``google-30d`` window table
(research/governance.md §4.2). A spec file overrides any part::

    latency: {objective: 0.995, threshold_seconds: 0.005}
    min_events_per_second: 0.5
    burn_windows:                      # short windows for a test, e.g.
      - {severity: page, short: 4s, long: 10s, factor: 14.4}

Durations are Prometheus durations (``30s``, ``5m``, ``1h``, ``3d``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from activelabel.errors import SLOSpecError
from activelabel.observability.metrics import FRONT_DOORS, LATENCY_BUCKETS
from activelabel.quality.drift import PSI_THRESHOLD

_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration such as ``5m``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Prometheus duration (write e.g. 30s, 5m, 1h, 3d)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _check_duration(value: str) -> str:
    duration_seconds(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BurnWindow(_Strict):
    """One row of the multiwindow multi-burn-rate table: alert when both windows burn ``factor`` times the budget."""

    severity: Literal["page", "ticket"]
    short: str
    long: str
    factor: float = Field(gt=0)

    @field_validator("short", "long")
    @classmethod
    def _duration(cls, value: str) -> str:
        return _check_duration(value)


# Sloth's internal/alert/windows/google-30d.yaml (the SRE workbook's table).
GOOGLE_30D = (
    BurnWindow(severity="page", short="5m", long="1h", factor=14.4),
    BurnWindow(severity="page", short="30m", long="6h", factor=6),
    BurnWindow(severity="ticket", short="2h", long="1d", factor=3),
    BurnWindow(severity="ticket", short="6h", long="3d", factor=1),
)


class LatencySLO(_Strict):
    """Labels served within the latency SLO: share of requests faster than ``threshold_seconds``."""

    objective: float = Field(default=0.99, gt=0, lt=1)
    threshold_seconds: float = 0.01
    """Must be a bucket bound of the latency histogram (``LATENCY_BUCKETS``)."""
    doors: str = "|".join(FRONT_DOORS)
    """Regular expression on the ``door`` label: which front doors the SLO covers. By default the
    request doors (one observation per request); not ``stream``, whose observation is a whole
    batch (give it an SLO of its own with ``doors: stream`` and a batch-sized threshold)."""

    @field_validator("threshold_seconds")
    @classmethod
    def _bucket(cls, value: float) -> float:
        if value not in LATENCY_BUCKETS:
            raise ValueError(f"{value} is not a latency bucket bound; pick one of {', '.join(map(str, LATENCY_BUCKETS))}")
        return value


class DeadLetterSLO(_Strict):
    """Events not dead-lettered: share of events labeled among events labeled or dead-lettered."""

    objective: float = Field(default=0.999, gt=0, lt=1)


class Thresholds(_Strict):
    """The plain alerts' thresholds and how long a condition must hold (``for``)."""

    dlq_spike_ratio: float = Field(default=0.05, gt=0, le=1)
    """Dead-lettered share of events over ``rate_window`` that pages."""
    accuracy_min: float = Field(default=0.9, gt=0, le=1)
    accuracy_min_items: int = Field(default=20, ge=1)
    """Ground-truth items in the accuracy window before an accuracy drop may open a ticket."""
    drift_psi: float = Field(default=PSI_THRESHOLD, gt=0)
    cardinality_usage: float = Field(default=0.9, gt=0, le=1)
    """distinct values / max_cardinality that opens a ticket."""
    stream_lag_messages: int = Field(default=1000, ge=0)
    page_for: str = "2m"
    ticket_for: str = "1h"
    down_for: str = "5m"
    spike_for: str = "2m"
    reload_for: str = "10m"
    drift_for: str = "1h"
    accuracy_for: str = "30m"
    lag_window: str = "10m"

    @field_validator(
        "page_for", "ticket_for", "down_for", "spike_for", "reload_for", "drift_for", "accuracy_for",
        "lag_window",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        return _check_duration(value)


class SLOSpec(_Strict):
    """Everything ``ops rules`` needs beyond the metric names."""

    service: str = "activelabel"
    job: str = "activelabel"
    """Prometheus ``job`` label of the scrape config (the labeler-down alert watches ``up{job=...}``)."""
    period: str = "30d"
    rate_window: str = "5m"
    """Window of the recording rules' rates (dashboards read these)."""
    feedback_window: str = "1h"
    """Window of the rate-based accuracy recording rule (M2)."""
    min_events_per_second: float = Field(default=0.1, ge=0)
    """Minimum traffic before a burn-rate or spike alert may fire (pyrra#1925): one error at low traffic never pages."""
    latency: LatencySLO = LatencySLO()
    dead_letter: DeadLetterSLO = DeadLetterSLO()
    burn_windows: tuple[BurnWindow, ...] = GOOGLE_30D
    thresholds: Thresholds = Thresholds()
    runbook_url: str = "docs/runbooks.md"
    """Where the runbooks live; each alert links ``<runbook_url>#<alert anchor>``."""

    @field_validator("period", "rate_window", "feedback_window")
    @classmethod
    def _duration(cls, value: str) -> str:
        return _check_duration(value)


def load_slo_spec(path: Path | str | None) -> SLOSpec:
    """Read an SLO spec YAML (``None``: the defaults); ``SLOSpecError`` names every invalid field."""
    if path is None:
        return SLOSpec()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SLOSpecError(f"cannot read SLO spec {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SLOSpecError(f"SLO spec {path} must be a YAML mapping (see docs/production.md)")
    try:
        return SLOSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SLOSpecError(f"invalid SLO spec {path}: {problems}") from exc
