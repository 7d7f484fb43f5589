"""Drift between a reference window and a current window: PSI and Jensen–Shannon distance.

Binning and thresholds follow Evidently's defaults, so figures compare with what
ML teams already watch: categorical values are their own bins, numeric values are
binned on edges from both windows (Sturges' rule), empty bins get 0.0001 so the
logarithms stay finite; PSI ≥ 0.1 and JS distance ≥ 0.1 count as drift.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

PSI_THRESHOLD = 0.1
JS_THRESHOLD = 0.1
EMPTY_BIN = 0.0001


def _is_numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def binned_shares(reference: Sequence[Any], current: Sequence[Any]) -> tuple[list[str], list[float], list[float]]:
    """(bin names, reference shares, current shares), with empty bins set to 0.0001."""
    if _is_numeric(reference) and _is_numeric(current) and len(set(reference) | set(current)) > 10:
        import numpy as np

        ref = np.array([v for v in reference if v is not None], dtype=float)
        cur = np.array([v for v in current if v is not None], dtype=float)
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        ref_counts = np.histogram(ref, edges)[0]
        cur_counts = np.histogram(cur, edges)[0]
        names = [f"{edges[i]:.4g}–{edges[i + 1]:.4g}" for i in range(len(edges) - 1)]
        ref_share = [c / max(len(ref), 1) for c in ref_counts.tolist()]
        cur_share = [c / max(len(cur), 1) for c in cur_counts.tolist()]
    else:
        ref_c = Counter("(none)" if v is None else str(v) for v in reference)
        cur_c = Counter("(none)" if v is None else str(v) for v in current)
        names = sorted(set(ref_c) | set(cur_c))
        ref_share = [ref_c[n] / max(len(reference), 1) for n in names]
        cur_share = [cur_c[n] / max(len(current), 1) for n in names]
    def fill(xs: list[float]) -> list[float]:
        return [x if x > 0 else EMPTY_BIN for x in xs]

    return names, fill(ref_share), fill(cur_share)


def psi(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """Population stability index: Σ (cur − ref) · ln(cur / ref) over bins."""
    _, ref, cur = binned_shares(reference, current)
    return float(sum((c - r) * math.log(c / r) for r, c in zip(ref, cur, strict=True)))


def js_distance(reference: Sequence[Any], current: Sequence[Any]) -> float:
    """Jensen–Shannon distance (natural log, as scipy and Evidently compute it).

    Computed here rather than with scipy, so the report needs no optional extra:
    both distributions are normalised, then sqrt((KL(p‖m) + KL(q‖m)) / 2) with m their mean.
    """
    _, ref, cur = binned_shares(reference, current)
    p_sum, q_sum = sum(ref), sum(cur)
    p = [x / p_sum for x in ref]
    q = [x / q_sum for x in cur]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    def kl(xs: list[float]) -> float:
        return sum(x * math.log(x / y) for x, y in zip(xs, m, strict=True) if x > 0)

    return math.sqrt(max(kl(p) + kl(q), 0.0) / 2)


def drift_check(name: str, reference: Sequence[Any], current: Sequence[Any]) -> dict[str, Any]:
    """PSI and JS distance for one column, with Evidently's thresholds and a drift flag."""
    if not reference or not current:
        return {"name": name, "reference_n": len(reference), "current_n": len(current), "psi": None,
                "js_distance": None, "psi_threshold": PSI_THRESHOLD, "js_threshold": JS_THRESHOLD, "drifted": False,
                "note": "a window is empty"}
    p, j = psi(reference, current), js_distance(reference, current)
    names, ref, cur = binned_shares(reference, current)
    return {
        "name": name, "reference_n": len(reference), "current_n": len(current),
        "psi": p, "js_distance": j, "psi_threshold": PSI_THRESHOLD, "js_threshold": JS_THRESHOLD,
        "drifted": p >= PSI_THRESHOLD or j >= JS_THRESHOLD,
        "bins": names, "reference_shares": ref, "current_shares": cur,
    }
