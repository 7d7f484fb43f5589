"""Drift between a reference window and a current window: PSI and Jensen–Shannon distance.

Binning and thresholds follow Evidently's defaults, so figures compare with what
ML teams already watch: numeric values are binned on edges from both windows
(Sturges' rule), empty bins get 0.0001 so the logarithms stay finite; PSI ≥ 0.1 and
JS distance ≥ 0.1 count as drift.

Categorical values are their own bins, except on a long tail: a value seen fewer
than ``MIN_BIN_COUNT`` times over both windows, or beyond the ``TOP_BINS`` most
common, goes to one ``(other)`` bin. Without that, every one-line class of a
long-tail label is an empty bin in one window, the 0.0001 fill turns it into a large
log ratio, and drift fires on random halves of the same log (Thunderbird's template
ids: PSI 0.31–0.34 on random halves before this, see docs/active-loop.md).

``decision_drift`` adds what a label's values alone do not show: the unset share,
the mean confidence, and the share of novel lines (see ``quality.novelty``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

PSI_THRESHOLD = 0.1
JS_THRESHOLD = 0.1
EMPTY_BIN = 0.0001
MIN_BIN_COUNT = 5
TOP_BINS = 20
OTHER = "(other)"
#: Mean confidence moving by this much (absolute) counts as drift.
CONFIDENCE_SHIFT = 0.1


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
        both = ref_c + cur_c
        kept = {n for n, c in both.most_common(TOP_BINS) if c >= MIN_BIN_COUNT}
        if len(kept) < len(both):
            ref_c = _fold(ref_c, kept)
            cur_c = _fold(cur_c, kept)
        names = sorted(set(ref_c) | set(cur_c))
        ref_share = [ref_c[n] / max(len(reference), 1) for n in names]
        cur_share = [cur_c[n] / max(len(current), 1) for n in names]
    def fill(xs: list[float]) -> list[float]:
        return [x if x > 0 else EMPTY_BIN for x in xs]

    return names, fill(ref_share), fill(cur_share)


def _fold(counts: Counter[str], kept: set[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for name, c in counts.items():
        out[name if name in kept else OTHER] += c
    return out


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
        # Distinct values before rare ones were folded into `(other)`: what the bins stand for.
        "values_total": len({str(v) for v in reference} | {str(v) for v in current}),
    }


def decision_drift(label: str, reference: Sequence[tuple[Any, float | None, bool]],
                   current: Sequence[tuple[Any, float | None, bool]]) -> dict[str, Any]:
    """Drift of one label's decisions; each item is (value or None when unset, confidence, novel?).

    Checks: the value distribution, the unset share, the novel share (each PSI/JS on two
    bins) and the mean confidence (drift when it moves by ``CONFIDENCE_SHIFT`` or more).
    Any one drifting makes ``drifted`` true.
    """
    def mean_conf(items: Sequence[tuple[Any, float | None, bool]]) -> float | None:
        confs = [c for v, c, _ in items if v is not None and c is not None]
        return sum(confs) / len(confs) if confs else None

    checks = {
        "values": drift_check(label, [v for v, _, _ in reference], [v for v, _, _ in current]),
        "unset_share": drift_check(f"{label} unset", [v is None for v, _, _ in reference],
                                   [v is None for v, _, _ in current]),
        "novel_share": drift_check(f"{label} novel", [n for *_, n in reference], [n for *_, n in current]),
    }
    ref_c, cur_c = mean_conf(reference), mean_conf(current)
    shift = None if ref_c is None or cur_c is None else cur_c - ref_c
    checks["mean_confidence"] = {"name": f"{label} mean confidence", "reference": ref_c, "current": cur_c,
                                 "shift": shift, "threshold": CONFIDENCE_SHIFT,
                                 "drifted": shift is not None and abs(shift) >= CONFIDENCE_SHIFT}
    shares = {
        "unset_share": (sum(v is None for v, _, _ in reference) / max(len(reference), 1),
                        sum(v is None for v, _, _ in current) / max(len(current), 1)),
        "novel_share": (sum(n for *_, n in reference) / max(len(reference), 1),
                        sum(n for *_, n in current) / max(len(current), 1)),
    }
    return {"label": label, "checks": checks, "shares": shares,
            "drifted": any(c["drifted"] for c in checks.values()),
            "fired": [k for k, c in checks.items() if c["drifted"]]}
