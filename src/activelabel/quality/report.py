"""The quality report as data: per label accuracy, F1, confusion and coverage; per
source the LF summary; conflict rate; drift between a reference and a current
window. ``render.py`` turns it into terminal tables and a self-contained HTML page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from activelabel.errors import FeedbackError, StoreError
from activelabel.quality.drift import decision_drift, drift_check
from activelabel.quality.metrics import (
    OTHER,
    TOP_VALUES,
    Vote,
    classification_summary,
    conflict_rate,
    source_summary,
    top_values,
    value_distribution,
    votes_from_explain,
)
from activelabel.quality.store import DecisionStore, StoredDecision, record_id_for

if TYPE_CHECKING:
    from activelabel.governance.output import OutputGuard

TIMELINE_BUCKETS = 10
#: The value a policy's novelty rule gives a line unlike anything the model was trained on
#: (docs/active-loop.md section 0): what the decision drift counts as novel.
NOVEL_VALUE = "__novel__"
SCORED_ON_NOTES = {
    "holdout": "held out before review, never reviewed or trained on: the honest score",
    "reviewed": "reviewed items only; no holdout with truth in this store, so these may be the model's "
                "own training data and read optimistic",
    "none": "no ground truth for this label yet",
}


def _pool_macro_f1(decisions: Sequence[StoredDecision], hold: Mapping[str, Any], pool_classes: set[str],
                   label: str, over: str) -> dict[str, Any]:
    """Holdout macro-F1 and accuracy over the classes review could teach, computed by the loop's
    own ``evaluate``: over the review pool's classes when the loop recorded them (then it is the
    figure ``activelabel loop`` printed), else over the classes reviewed so far (``over``)."""
    from activelabel.quality.loop import evaluate

    by_id = {d.record_id: d for d in decisions}
    ids = sorted(i for i in hold if i in by_id)
    m = evaluate(by_id, hold, ids, label, pool_classes, {})
    return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "classes": m["classes_scored"],
            "n": m["seen_class_lines"], "pool_classes": len(pool_classes), "over": over}


def _stored_pool_classes(store: DecisionStore) -> dict[str, set[str]]:
    labels = {lab for _, lab in store.holdout_truth()}
    return {lab: classes for lab in labels if (classes := store.pool_classes(lab))}


def _decision_items(decisions: Sequence[StoredDecision], label: str) -> list[tuple[Any, float | None, bool]]:
    return [(d.labels.get(label), d.confidences.get(label), d.labels.get(label) == NOVEL_VALUE) for d in decisions]


def field_value(event: Mapping[str, Any], path: str) -> Any:
    """``a.b.c`` inside an event (a leading ``event.`` is allowed); None when absent."""
    value: Any = event
    parts = path.split(".")
    if parts and parts[0] == "event":
        parts = parts[1:]
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _split(decisions: Sequence[StoredDecision], reference_fraction: float) -> tuple[list[StoredDecision], list[StoredDecision]]:
    cut = round(len(decisions) * reference_fraction)
    return list(decisions[:cut]), list(decisions[cut:])


def _as_epoch(value: Any) -> float | None:
    """Epoch seconds from a number, a numeric string or an ISO-8601 time; None otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def order_by_time(decisions: Sequence[StoredDecision], time_field: str | None) -> list[StoredDecision]:
    """Decisions in event-time order when ``time_field`` gives a time (its ``ts`` becomes that time),
    else as recorded. Windows and the timeline follow the events' own clock, not the recording's."""
    if not time_field:
        return list(decisions)
    timed = []
    for d in decisions:
        t = _as_epoch(field_value(d.event, time_field))
        timed.append(d if t is None else StoredDecision(d.record_id, t, d.policy_version, d.labels, d.confidences,
                                                         d.sources, d.explain, d.event))
    return sorted(timed, key=lambda d: d.ts)


def _bucket_name(chunk: Sequence[StoredDecision], start: int, same_time: bool) -> str:
    if chunk[0].ts <= 1e8:  # files carry no time: their "time" is the line number
        return f"line {int(chunk[0].ts)}"
    if same_time:  # recorded in one burst: the time says nothing, the position does
        return f"#{start + 1}–{start + len(chunk)}"
    return datetime.fromtimestamp(chunk[0].ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _timeline(decisions: Sequence[StoredDecision], label: str, buckets: int) -> dict[str, Any]:
    """Label value shares per slice of the decisions (in time order): for the drift-over-time plot."""
    if not decisions:
        return {"buckets": [], "values": [], "shares": []}
    size = max(1, -(-len(decisions) // buckets))
    chunks = [decisions[i:i + size] for i in range(0, len(decisions), size)]
    counts = value_distribution(d.labels.get(label) for d in decisions if d.labels.get(label) is not None)
    values = sorted(top_values(counts, TOP_VALUES))
    folded = len(counts) > len(values)
    shares = []
    for chunk in chunks:
        dist = value_distribution(d.labels.get(label) for d in chunk if d.labels.get(label) is not None)
        row = [dist.get(v, 0) / len(chunk) for v in values]
        if folded:  # one band for every value past the top ones
            row.append((sum(dist.values()) - sum(dist.get(v, 0) for v in values)) / len(chunk))
        shares.append(row)
    if folded:
        values = [*values, OTHER]
    same_time = decisions[-1].ts - decisions[0].ts < len(chunks)
    starts = [_bucket_name(c, i * size, same_time) for i, c in enumerate(chunks)]
    return {"buckets": starts, "values": values, "shares": shares}


def build_report(
    decisions: Sequence[StoredDecision],
    truth: Mapping[tuple[str, str], Any],
    *,
    rule_values: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    drift_fields: Sequence[str] = (),
    reference_fraction: float = 0.5,
    source: str = "",
    time_field: str | None = None,
    model_votes: Mapping[str, Mapping[str, Sequence[Vote]]] | None = None,
    guard: OutputGuard | None = None,
    holdout_truth: Mapping[tuple[str, str], Any] | None = None,
    pool_classes: Mapping[str, set[str]] | None = None,
) -> dict[str, Any]:
    """The whole report as JSON-ready data. ``decisions`` in recording order, or ordered by ``time_field``.

    ``holdout_truth``: truth of held-out records (never reviewed or trained on). A label with
    some is scored on it (``quality``, per value, confusion); the reviewed items' scores move
    to ``reviewed`` (optimistic: they may be what the model was trained on).
    ``pool_classes``: per label, the classes of the review pool (recorded by the loop), the
    class set the holdout's second score is over; without it, the classes reviewed so far.

    ``guard``: the report's reader (`OutputGuard.reader`): labels above its clearance are
    reported by their pseudonyms (pii: counts, accuracy and drift still work, since
    pseudonyms are deterministic) or left out (secret); no value of theirs is written.
    """
    rule_values = rule_values or {}
    hidden: frozenset[str] = frozenset()
    if guard is not None:
        hidden = guard.hidden
        decisions, truth, model_votes = guard_stored(decisions, truth, model_votes, guard)
        if holdout_truth:
            _, holdout_truth, _ = guard_stored([], holdout_truth, None, guard)
        if pool_classes:  # the same treatment as the truth they are compared with
            from activelabel.governance.sensitivity import DROPPED

            pool_classes = {lab: {str(v) for v in (guard.stored_value(lab, c) for c in cs) if v is not DROPPED}
                            for lab, cs in pool_classes.items()}
    pool_classes = pool_classes or {}
    holdout_truth = holdout_truth or {}
    decisions = order_by_time(decisions, time_field)
    names = list(labels) if labels else sorted({k for d in decisions for k in d.labels} | {k for _, k in truth}
                                                | {k for _, k in holdout_truth})
    reference, current = _split(decisions, reference_fraction)
    report: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(),
        "source": source,
        "records": len(decisions),
        "ground_truth": len(truth),
        "policy_versions": value_distribution(d.policy_version for d in decisions),
        "windows": {"reference": len(reference), "current": len(current), "reference_fraction": reference_fraction},
        "labels": {},
        "drift": {"labels": {}, "features": {}, "decisions": {}},
    }
    by_id = {d.record_id: d for d in decisions}
    for label in names:
        votes_per_record = [votes_from_explain((d.explain.get("labels") or {}).get(label) or
                                               {"value": d.labels.get(label), "source": d.sources.get(label)},
                                               {} if label in hidden else rule_values) if label in d.labels else []
                            for d in decisions]
        for d, votes in zip(decisions, votes_per_record, strict=True):
            for vote in (model_votes or {}).get(label, {}).get(d.record_id, ()):
                _merge_vote(votes, vote)
        truths = [truth.get((d.record_id, label)) for d in decisions]
        judged = [(t, d.labels.get(label)) for d, t in zip(decisions, truths, strict=True) if t is not None]
        reviewed_quality = classification_summary([t for t, _ in judged], [p for _, p in judged])
        hold = {rid: v for (rid, lab), v in holdout_truth.items() if lab == label and rid in by_id}
        held = [(v, by_id[rid].labels.get(label)) for rid, v in hold.items()]
        quality = classification_summary([t for t, _ in held], [p for _, p in held]) if held else reviewed_quality
        scored_on = "holdout" if held else "reviewed" if judged else "none"
        pool_score = None
        if held and pool_classes.get(label):
            pool_score = _pool_macro_f1(decisions, hold, pool_classes[label], label, "the review pool")
        elif held and judged:
            pool_score = _pool_macro_f1(decisions, hold, {str(t) for t, _ in judged}, label, "the reviewed items")
        set_count = sum(1 for d in decisions if label in d.labels)
        non_default = sum(1 for d in decisions if label in d.labels and d.sources.get(label) != "default")
        rate, _ = conflict_rate(votes_per_record)
        report["labels"][label] = {
            "coverage": set_count / len(decisions) if decisions else 0.0,
            "coverage_non_default": non_default / len(decisions) if decisions else 0.0,
            "judged": len(held) if held else len(judged),
            "quality": quality,
            "scored_on": scored_on,
            "scored_on_note": SCORED_ON_NOTES[scored_on],
            "macro_f1_over": f"every value true or predicted on the {'holdout' if held else 'reviewed items'} "
                             f"({quality['values_total']} values)",
            "reviewed": {"judged": len(judged), "quality": reviewed_quality, "optimistic": True,
                         "note": "reviewed items: feedback the model may have been trained on; optimistic"},
            "holdout_pool_classes": pool_score,
            "conflict_rate": rate,
            "distribution": value_distribution((d.labels.get(label) for d in decisions), top=TOP_VALUES),
            # Correct / incorrect on the same truth as the headline: the holdout when there is one
            # (on the reviewed items a model is scored on its own training data).
            "sources": source_summary(zip(votes_per_record, [hold.get(d.record_id) for d in decisions] if held
                                          else truths, strict=True), len(decisions)),
            "timeline": _timeline(decisions, label, TIMELINE_BUCKETS),
        }
        report["drift"]["labels"][label] = _bounded_bins(drift_check(
            label, [d.labels.get(label) for d in reference], [d.labels.get(label) for d in current]))
        dd = decision_drift(label, _decision_items(reference, label), _decision_items(current, label))
        dd["checks"]["values"] = _bounded_bins(dd["checks"]["values"])
        report["drift"]["decisions"][label] = dd
    for path in drift_fields:
        report["drift"]["features"][path] = _bounded_bins(drift_check(
            path, [field_value(d.event, path) for d in reference], [field_value(d.event, path) for d in current]))
    return report


def guard_stored(
    decisions: Sequence[StoredDecision],
    truth: Mapping[tuple[str, str], Any],
    model_votes: Mapping[str, Mapping[str, Sequence[Vote]]] | None,
    guard: OutputGuard,
) -> tuple[list[StoredDecision], dict[tuple[str, str], Any], dict[str, dict[str, list[Vote]]] | None]:
    """Decisions, truth and model votes as ``guard``'s reader may see them (the one privacy step of reports and reviews)."""
    from activelabel.governance.sensitivity import DROPPED

    out = []
    for d in decisions:
        rec = guard.record(d.event, d.labels, explain=d.explain)
        out.append(replace(d, labels=rec.fields["labels"], explain=rec.fields["label_meta"],
                           event=d.event if rec.event is None else rec.event))
    seen_truth = {}
    for (rid, lab), value in truth.items():
        seen = guard.stored_value(lab, value)
        if seen is not DROPPED:
            seen_truth[(rid, lab)] = seen
    votes = None
    if model_votes is not None:
        votes = {}
        for lab, per_id in model_votes.items():
            kept: dict[str, list[Vote]] = {}
            for rid, vs in per_id.items():
                treated = [(v, guard.stored_value(lab, v.value)) for v in vs]
                kept[rid] = [Vote(v.source, t, v.confidence) for v, t in treated if t is not DROPPED]
            votes[lab] = kept
    return out, seen_truth, votes


def _bounded_bins(check: dict[str, Any], top: int = TOP_VALUES) -> dict[str, Any]:
    """A drift check whose bins past the ``top`` largest (by share in both windows) are one ``(other)`` bin.

    PSI and JS distance stay computed over every bin; only what is shown is folded.
    """
    bins = check.get("bins")
    if not bins or len(bins) <= top:
        return check
    ref, cur = check["reference_shares"], check["current_shares"]
    # drift_check may have folded rare values into an `(other)` bin already: that bin joins
    # the folded rest rather than being kept beside it, so each bin name appears once.
    ranked = sorted((i for i in range(len(bins)) if bins[i] != OTHER), key=lambda i: -(ref[i] + cur[i]))
    keep = sorted(ranked[:top])
    rest = set(range(len(bins))) - set(keep)
    return {**check,
            "bins": [bins[i] for i in keep] + [OTHER],
            "reference_shares": [ref[i] for i in keep] + [sum(ref[i] for i in rest)],
            "current_shares": [cur[i] for i in keep] + [sum(cur[i] for i in rest)],
            "bins_total": len(bins)}


def _merge_vote(votes: list[Vote], vote: Vote) -> None:
    """Put a model's own prediction among a record's votes (its value is unknown to the explanation
    when it lost, or absent when it was not asked)."""
    for existing in votes:
        if existing.source == vote.source or existing.source.split("@")[0] == vote.source.split("@")[0]:
            existing.value, existing.confidence = vote.value, vote.confidence
            existing.source = vote.source
            return
    votes.append(vote)


def model_votes_for(decisions: Sequence[StoredDecision], labelers: Sequence[Any]) -> dict[str, dict[str, list[Vote]]]:
    """What each model predicts (abstentions left out) for each recorded event: label → id → votes."""
    from activelabel.quality.features import feature_rows

    out: dict[str, dict[str, list[Vote]]] = {}
    for lab in labelers:
        rows = feature_rows(decisions, lab.feature_programs, hide_label=lab.label)
        per_id = out.setdefault(lab.label, {})
        for d, got in zip(decisions, lab.predict_batch(rows), strict=True):
            if got is not None:
                per_id.setdefault(d.record_id, []).append(Vote(lab.source, got[0], got[1]))
    return out


def report_from_store(store: DecisionStore, *, model_labelers: Sequence[Any] = (), **kwargs: Any) -> dict[str, Any]:
    """The report over everything a store holds; ``model_labelers`` add each model's own votes."""
    registry = store.registry()
    decisions = list(store.decisions())
    votes = model_votes_for(decisions, model_labelers) if model_labelers else None
    report = build_report(decisions, store.truth_map(), rule_values=registry.rule_values if registry else {},
                          source=str(store.path), model_votes=votes, holdout_truth=store.holdout_truth(),
                          pool_classes=_stored_pool_classes(store), **kwargs)
    from activelabel.quality.evaluation import evaluation_split

    report["evaluation"] = evaluation_split(store, decisions, kwargs.get("labels"))
    return report


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield n, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise StoreError(f"{path}:{n}: not valid JSON: {exc}") from exc


def report_from_files(labeled: str | Path, truth: str | Path, *, id_field: str | None = None,
                      labels_field: str = "labels", meta_field: str = "label_meta", **kwargs: Any) -> dict[str, Any]:
    """The report over a labeled JSONL (``activelabel label`` output) and a truth JSONL of {id, label, value}."""
    decisions = []
    for n, obj in _read_jsonl(Path(labeled)):
        if not isinstance(obj, dict) or not isinstance(obj.get(labels_field), dict):
            raise StoreError(f"{labeled}:{n}: no {labels_field!r} object; label the file first (activelabel label)")
        meta = obj.get(meta_field) or {}
        event = {k: v for k, v in obj.items() if k not in (labels_field, meta_field)}
        meta_labels = meta.get("labels", {}) if isinstance(meta, dict) else {}
        decisions.append(StoredDecision(
            record_id=record_id_for(event, id_field), ts=float(n), policy_version=meta.get("policy_version"),
            labels=obj[labels_field],
            confidences={k: v.get("confidence") for k, v in meta_labels.items()},
            sources={k: v.get("source") for k, v in meta_labels.items()},
            explain=meta if isinstance(meta, dict) else {}, event=event))
    truth_map, rejected = read_truth_file(Path(truth))
    report = build_report(decisions, truth_map, source=f"{labeled} + {truth}", **kwargs)
    report["truth_rejected"] = {"count": len(rejected), "first": [{"where": w, "reason": r} for w, r in rejected[:20]]}
    return report


def read_truth_file(path: Path) -> tuple[dict[tuple[str, str], Any], list[tuple[str, str]]]:
    """(truth by (id, label), refused lines as (file:line, reason)): each line is taken or refused on its own,
    as ``feedback import`` does, so one bad line never costs the rest."""
    truth_map: dict[tuple[str, str], Any] = {}
    rejected: list[tuple[str, str]] = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                rejected.append((where, f"not valid JSON: {exc}"))
                continue
            if not isinstance(obj, dict) or not {"id", "label", "value"} <= obj.keys():
                rejected.append((where, "expected an object with id, label and value"))
                continue
            truth_map[(str(obj["id"]), str(obj["label"]))] = obj["value"]
    if rejected and not truth_map:
        raise FeedbackError(f"{path}: no line is a truth object of id, label and value "
                            f"({len(rejected)} refused, first: {rejected[0][0]}: {rejected[0][1]})")
    return truth_map, rejected
