"""The active loop as one call: rounds of select → annotate → import → train → relabel → evaluate.

Evaluation is on a **holdout** chosen before the first round: a record is held out
when a hash of the seed and its id falls under the fraction, so the same seed holds
out the same records in any process. Review never selects a held-out record and
training never sees one (truth that arrives for one goes to the holdout table, not
to ground truth). Scores are computed there only.

The policy keeps referencing the newest model: the loop owns an included file next
to the policy (``<stem>.loop-models.yaml``) that it rewrites every round, and adds
one ``include:`` line to the policy the first time. That keeps the policy's own text
(comments, order, formatting) untouched without a YAML round-trip library, and a
second run finds the include already there instead of a duplicate ``models:`` key.
The same file declares a ``type: novelty`` enricher over ``<stem>.loop-novelty.json``
(the newest model's training templates; empty before the first model), so the policy's
rules can send novel lines to review at ``label``/``serve`` time.

Annotation: ``answers`` (a simulated annotator reading the truth file, for
experiments and CI) or, without answers, the loop writes each round's tasks as
Label Studio JSON and waits for their answers to arrive in the store (from
``review import``, ``review serve`` or the Label Studio ML backend's webhook) or for
an export dropped next to the tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import LoopError, StoreError
from activelabel.quality.feedback import FeedbackItem, apply_feedback, read_feedback_file
from activelabel.quality.novelty import NoveltyIndex, novelty_path_for
from activelabel.quality.store import DecisionStore, StoredDecision, record_id_for

HOW = "loop-answers"


def holdout_ids(ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The held-out ids: those whose hash with the seed falls under ``fraction`` (deterministic per seed)."""
    if fraction <= 0:
        return set()
    out = set()
    for rid in ids:
        digest = hashlib.sha256(f"{seed}:{rid}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < fraction:
            out.add(rid)
    return out


def withheld_template_ids(ids: Sequence[str], keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Every id whose template key's hash with the seed falls under ``fraction``: whole templates kept
    out of the review pool (so the holdout has templates, and often classes, the pool never had)."""
    if fraction <= 0:
        return set()
    chosen: dict[str, bool] = {}
    for key in keys:
        if key not in chosen:
            digest = hashlib.sha256(f"{seed}:template:{key}".encode()).digest()
            chosen[key] = int.from_bytes(digest[:8], "big") / 2**64 < fraction
    return {rid for rid, key in zip(ids, keys, strict=True) if chosen[key]}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % Wilson score interval for a proportion (sound at 0 and 1 and for small n)."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# -- the policy file the loop owns ------------------------------------------------------------------

def owned_models_file(policy: Path) -> Path:
    return policy.with_name(policy.stem + ".loop-models.yaml")


_INCLUDE = re.compile(r"^include:[ \t]*(?P<rest>.*)$", re.MULTILINE)


def ensure_include(policy: Path, include: str) -> bool:
    """Add ``include`` to the policy's top-level ``include:`` (created at the end if absent).

    A text edit of one line, so comments and order stay as they are; returns whether
    the file changed (False when the include is already there).
    """
    raw = policy.read_bytes().decode()
    crlf = "\r\n" in raw  # a Windows-edited policy keeps its line endings
    text = raw.replace("\r\n", "\n") if crlf else raw
    m = _INCLUDE.search(text)
    if m is not None:
        after = text[m.end():]
        block = re.match(r"(?:\n[ \t]*(?:-[^\n]*|#[^\n]*)?(?=\n|$))*", after)
        if include in m.group("rest") or (block and re.search(rf"-\s*['\"]?{re.escape(include)}['\"]?\s*$",
                                                                block.group(0), re.MULTILINE)):
            return False
        rest = m.group("rest").strip()
        if rest.startswith("["):
            inner = rest[1:].lstrip()
            new_line = f"include: [{include}{', ' if not inner.startswith(']') else ''}{inner}"
            text = text[:m.start()] + new_line + text[m.end():]
        elif rest in ("", "# ") or rest.startswith("#"):
            indent = re.search(r"\n([ \t]*)-", after)
            pad = indent.group(1) if indent else "  "
            text = text[:m.end()] + f"\n{pad}- {include}" + text[m.end():]
        else:
            raise LoopError(f"{policy}: cannot add {include} to `include: {rest}`; "
                              f"add it yourself (include: [{include}, ...])")
    else:
        sep = "" if text.endswith("\n") else "\n"
        text += f"{sep}\n# The newest model from `activelabel loop` (the file is rewritten every round).\n" \
                f"include:\n  - {include}\n"
    tmp = policy.with_name(policy.name + ".tmp")
    tmp.write_bytes((text.replace("\n", "\r\n") if crlf else text).encode())
    tmp.replace(policy)
    return True


def owned_novelty_file(policy: Path) -> Path:
    """The novelty index the loop's ``type: novelty`` enricher reads (beside the policy, so always inside its folder)."""
    return policy.with_name(policy.stem + ".loop-novelty.json")


def novelty_key(features: Mapping[str, str], text_features: Sequence[str]) -> str:
    """The CEL key of the novelty enricher: the text the index was built from (as `row_text` joins it)."""
    exprs = [features[n] for n in text_features if n in features]
    if not exprs:
        return '""'  # no index yet: every line scores 1.0 whatever the key
    if len(exprs) == 1:
        return exprs[0]
    return ' + " | " + '.join(f"string({e})" for e in exprs)


def write_models_file(path: Path, *, name: str, label: str, artifact: Path | None, features: Mapping[str, str],
                      min_confidence: float, note: str, novelty_file: Path | None = None,
                      novelty_enricher: str = "novelty", novelty_key_expr: str = '""',
                      nearest_template: bool = False) -> None:
    """The loop's included file: the novelty enricher (rules read ``<enricher>.novel``) and one
    ``models:`` entry for the newest artifact (none before the first model)."""
    def rel(p: Path) -> str:
        try:
            return orjson.dumps(str(p.resolve().relative_to(path.parent.resolve()))).decode()
        except ValueError:
            return orjson.dumps(str(p.resolve())).decode()

    lines = [f"# Written by `activelabel loop` ({note}). Rewritten every round: edit the policy, not this file."]
    if novelty_file is not None:
        lines += [
            "enrichers:",
            f"  - name: {novelty_enricher}",
            "    type: novelty",
            f"    key: {orjson.dumps(novelty_key_expr).decode()}",
            f"    file: {rel(novelty_file)}",
            "    description: how unlike the templates the newest model was trained on a line is (score, novel)",
        ]
    if artifact is not None:
        lines += [
            "models:",
            f"  - name: {name}",
            f"    label: {label}",
            "    type: sklearn",
            f"    path: {rel(artifact)}",
            "    features:",
            *[f"      {k}: {orjson.dumps(v).decode()}" for k, v in features.items()],
            f"    min_confidence: {min_confidence}",
            *(["    below_confidence: nearest-template"] if nearest_template else []),
            "    timeout_ms: 5000",
            "    on_error: abstain",
        ]
    lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)


# -- configuration and results -----------------------------------------------------------------------

@dataclass
class LoopConfig:
    policy: Path
    data: Path
    label: str
    out: Path
    id_field: str | None = None
    features: dict[str, str] = field(default_factory=dict)
    rounds: int = 5
    budget: int = 30
    strategy: str = "novelty"
    holdout: float = 0.5
    holdout_templates: float = 0.0  # also hold out whole templates (by --dedup-field's template key)
    seed: int = 0
    answers: Path | None = None
    dedup_field: str | None = None
    dedup: bool = True
    rule_labels: float | None = 0.9
    min_confidence: float = 0.5
    novelty_threshold: float = 0.4
    #: ``novelty`` strategy: the share of each round's budget spent on the least certain lines first
    #: (the model's own confidence, see `Loop._guesses`); the rest goes farthest-first by novelty.
    uncertainty_share: float = 0.5
    #: ``novelty`` strategy: once nothing left is novel, spend the rest of the round on second examples
    #: of classes reviewed once (see `Loop._second_examples`) before lines the model already knows.
    second_examples: bool = True
    #: Below ``min_confidence`` the model answers the class of the line's template when it was trained on
    #: that template (the model entry's ``below_confidence: nearest-template``, see docs/policy.md).
    nearest_template: bool = True
    novelty_enricher: str | None = "novelty"  # None: no novelty enricher in the loop's file
    wait_timeout: float = 3600.0
    poll_interval: float = 1.0


@dataclass
class Round:
    """What one round measured (on the holdout unless said otherwise)."""

    round: int
    reviewed: int
    model: str | None
    holdout: dict[str, Any]
    agreement: dict[str, Any] | None
    abstentions: dict[str, Any]
    classes_unpredictable: list[str]
    novel_share: float | None
    elapsed_s: float
    #: The review of the items the round before picked (what ``reviewed`` grew by): picked, accepted,
    #: rejected (a value the label refuses, the reason on stderr) and unanswered (no answer came).
    annotation: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def read_events(path: Path, id_field: str | None, duplicates: list[int] | None = None
                ) -> tuple[list[str], list[dict[str, Any]]]:
    """(ids, events) from JSON Lines; the same record id twice keeps the last line.

    ``duplicates`` collects the line numbers of records whose id an earlier line had.
    """
    ids: list[str] = []
    events: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise LoopError(f"{path}:{n}: not valid JSON ({exc}); --data must be JSON Lines") from exc
            if not isinstance(event, dict):
                raise LoopError(f"{path}:{n}: expected a JSON object per line")
            try:
                rid = record_id_for(event, id_field)
            except StoreError as exc:
                raise LoopError(f"{path}:{n}: {exc}") from exc
            if rid in seen:
                events[seen[rid]] = event
                if duplicates is not None:
                    duplicates.append(n)
                continue
            seen[rid] = len(ids)
            ids.append(rid)
            events.append(event)
    if not ids:
        raise LoopError(f"{path}: no records (an empty file, or blank lines only); --data needs JSON Lines of events")
    return ids, events


@dataclass
class Answers:
    """A truth file read for one label: its answers, and what in it could not be used."""

    values: dict[str, Any]  # record id -> true value of the label
    bad_lines: list[str]  # "file:line: why" for lines that are not {id, label, value}
    other_labels: dict[str, int]  # answers for other labels (ignored), per label


def read_answers(path: Path, label: str) -> Answers:
    """The answers for ``label`` in a JSONL of {id, label, value}, and the lines that could not be used."""
    from activelabel.errors import FeedbackError

    try:
        items = read_feedback_file(path)[0]
    except FeedbackError as exc:
        raise LoopError(f"--answers {path}: {exc}") from exc
    answers = Answers({}, [], {})
    for item in items:
        if not isinstance(item, FeedbackItem):
            answers.bad_lines.append(str(item))
        elif item.label == label:
            answers.values[item.record_id] = item.value
        else:
            answers.other_labels[item.label] = answers.other_labels.get(item.label, 0) + 1
    return answers


def _source_kind(source: str | None) -> str:
    if not source:
        return "unset"
    return source.split(":", 1)[0] if ":" in source else source


def evaluate(decisions: Mapping[str, StoredDecision], truth: Mapping[str, Any], ids: Sequence[str], label: str,
             pool_classes: set[str], novel: Mapping[str, bool]) -> dict[str, Any]:
    """Scores on ``ids`` (the holdout): macro-F1 and accuracy over lines whose class occurs in the
    review pool, coverage, and how lines of classes the pool never had were handled."""
    judged = [i for i in ids if i in truth]
    seen = [i for i in judged if str(truth[i]) in pool_classes]
    unseen = [i for i in judged if str(truth[i]) not in pool_classes]
    pred = {i: decisions[i].labels.get(label) for i in judged}
    classes = sorted({str(truth[i]) for i in seen})
    f1s = []
    for c in classes:
        tp = sum(1 for i in seen if str(truth[i]) == c and str(pred[i]) == c)
        fp = sum(1 for i in seen if str(truth[i]) != c and pred[i] is not None and str(pred[i]) == c)
        fn = sum(1 for i in seen if str(truth[i]) == c and str(pred[i]) != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    correct = sum(1 for i in seen if pred[i] is not None and str(pred[i]) == str(truth[i]))
    set_n = sum(1 for i in ids if label in decisions[i].labels)
    handled = 0
    mislabeled = 0
    for i in unseen:
        kind = _source_kind(decisions[i].sources.get(label) if label in decisions[i].labels else None)
        if kind in ("unset", "default") or novel.get(i, False):
            handled += 1
        elif str(pred[i]) != str(truth[i]):
            mislabeled += 1
    ci = wilson_interval(correct, len(seen))
    return {
        "size": len(ids), "judged": len(judged), "seen_class_lines": len(seen), "classes_scored": len(classes),
        "macro_f1": sum(f1s) / len(f1s) if f1s else None,
        "accuracy": correct / len(seen) if seen else None,
        "accuracy_ci95": list(ci) if ci else None,
        "coverage": set_n / len(ids) if ids else None,
        "unseen_class_lines": len(unseen),
        "unseen_abstained_or_novel": handled / len(unseen) if unseen else None,
        "unseen_mislabeled": mislabeled / len(unseen) if unseen else None,
    }


def message_features(kinds: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The features novelty reads: free text of three words or more on average (the log message),
    not short codes such as a level or a component, which every template shares."""
    def mean_words(name: str) -> float:
        values = [str(r.get(name)) for r in rows if r.get(name) is not None]
        return sum(len(v.split()) for v in values) / len(values) if values else 0.0

    text = [n for n, k in kinds.items() if k == "text"] or list(kinds)
    long = [n for n in text if mean_words(n) >= 3]
    return long or [max(text, key=mean_words)]


# -- the loop --------------------------------------------------------------------------------------

class Loop:
    """One run of the active loop (see the module docstring); ``run`` yields each round as it ends."""

    def __init__(self, cfg: LoopConfig, *, on_round: Callable[[Round], None] | None = None,
                 on_wait: Callable[[Path, int], None] | None = None,
                 on_note: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.on_round = on_round or (lambda r: None)
        self.on_wait = on_wait or (lambda p, n: None)
        self.note = on_note or (lambda text: None)  # what a user should know, one line each (stderr in the CLI)
        self.policy = cfg.policy.resolve()
        self.out = cfg.out.resolve()
        self.models_file = owned_models_file(self.policy)
        self.novelty_file = owned_novelty_file(self.policy)
        duplicates: list[int] = []
        self.ids, self.events = read_events(cfg.data, cfg.id_field, duplicates)
        if duplicates:
            self.note(f"{cfg.data}: {len(duplicates)} lines repeat the record id of an earlier line (first: line "
                      f"{duplicates[0]}); the last line of each id is the record")
        self.by_id = dict(zip(self.ids, self.events, strict=True))
        self.answers = self._read_answers() if cfg.answers else None
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = DecisionStore(self.out / "store.db")
        self.hold = holdout_ids(self.ids, cfg.holdout, cfg.seed)
        self.withheld: set[str] = set()
        if cfg.holdout_templates > 0:
            from activelabel.quality.report import field_value
            from activelabel.quality.review import template_key

            def text(event: Mapping[str, Any]) -> str:
                value = field_value(event, cfg.dedup_field) if cfg.dedup_field else event
                return value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS,
                                                                         default=str).decode()

            keys = [template_key(text(e)) for e in self.events]
            self.withheld = withheld_template_ids(self.ids, keys, cfg.holdout_templates, cfg.seed)
            self.hold |= self.withheld
        self.pool = [i for i in self.ids if i not in self.hold]
        self.rounds: list[Round] = []
        self.model_name = f"{cfg.label}_model"
        self.artifact: Path | None = None
        self.novelty: NoveltyIndex | None = None
        self.declare_enricher = True  # False when the user's own files declare an enricher of that name
        self.novelty_rules: set[str] = set()  # sources ("rule:<id>") of rules reading the novelty enricher
        self.policy_version: str | None = None

    def _read_answers(self) -> dict[str, Any]:
        """The truth file's answers for the label, refusing one that cannot answer anything."""
        cfg = self.cfg
        assert cfg.answers is not None
        got = read_answers(cfg.answers, cfg.label)
        if got.bad_lines:
            self.note(f"--answers {cfg.answers}: {len(got.bad_lines)} lines ignored, e.g. " + "; ".join(got.bad_lines[:3]))
        if not got.values:
            others = ", ".join(f"{k} ({v})" for k, v in sorted(got.other_labels.items()))
            hint = f"it answers other labels: {others}; pass --label with one of them" if others else \
                "each line is {\"id\": ..., \"label\": ..., \"value\": ...}"
            raise LoopError(f"--answers {cfg.answers} has no answer for label {cfg.label!r}: {hint}")
        if got.other_labels:
            self.note(f"--answers {cfg.answers}: answers for other labels ignored: "
                      + ", ".join(f"{k} ({v})" for k, v in sorted(got.other_labels.items())))
        unknown = [rid for rid in got.values if rid not in self.by_id]
        if len(unknown) == len(got.values):
            hint = (" (the records' ids are content hashes: pass --id-field with the field the answers' ids come from)"
                    if cfg.id_field is None else f" (record ids come from the field {cfg.id_field!r})")
            raise LoopError(f"--answers {cfg.answers}: none of its {len(unknown)} ids is a record of --data "
                            f"{cfg.data}{hint}; e.g. {unknown[0]!r}")
        if unknown:
            self.note(f"--answers {cfg.answers}: {len(unknown)} answers name no record of --data (ignored), "
                      f"e.g. {unknown[0]!r}")
        unanswered = len(self.ids) - (len(got.values) - len(unknown))
        if unanswered:
            self.note(f"--answers {cfg.answers}: {unanswered} of the {len(self.ids)} records have no answer: "
                      "the review cannot label them and the holdout is scored without them")
        return {rid: v for rid, v in got.values.items() if rid in self.by_id}

    def _check_answers(self, policy: Any) -> None:
        """Answers whose value the label refuses (outside a closed enum, a wrong type): named now, then left
        out, so neither the review nor the holdout's score reads a value the policy cannot give."""
        if self.answers is None:
            return
        from activelabel.errors import FeedbackError

        self.store.register_policy(policy)
        registry = self.store.registry()
        if registry is None:
            return
        refused: dict[str, str] = {}
        for rid, value in self.answers.items():
            try:
                self.answers[rid] = registry.check(self.cfg.label, value)
            except FeedbackError as exc:
                refused[rid] = str(exc)
        if refused:
            first = next(iter(refused))
            self.note(f"--answers {self.cfg.answers}: {len(refused)} answers refused by label {self.cfg.label!r} and "
                      f"left out (e.g. {first}: {refused[first]})")
            for rid in refused:
                del self.answers[rid]

    def _check_holdout(self) -> None:
        """One holdout per store and label: a store that holds another one (other --seed or --holdout) would
        score this run on records an earlier model was trained on."""
        label = self.cfg.label
        before = self.store.holdout_ids(label)
        if before and before != self.hold:
            raise LoopError(f"{self.out / 'store.db'} already holds a holdout of {len(before)} records for {label!r}, "
                            f"chosen with another --seed or --holdout (this run's: {len(self.hold)}): its models were "
                            "trained beside that holdout, so scoring another would be scoring training data. "
                            "Use a new --out, or the earlier run's --seed and --holdout")
        reviewed = len(self.store.ground_truth(label))
        if reviewed:
            self.note(f"continuing: {self.out / 'store.db'} already holds {reviewed} reviewed items for {label!r} "
                      "(an earlier run); rounds go on from there")

    @contextlib.contextmanager
    def _undo_on_failure(self) -> Iterator[None]:
        """A run refused before its first round leaves the policy and the loop's files as they were."""
        files = [self.policy, self.models_file, self.novelty_file]
        saved = {p: p.read_bytes() if p.is_file() else None for p in files}
        try:
            yield
        except BaseException:
            for p, content in saved.items():
                if content is None:
                    p.unlink(missing_ok=True)
                elif not p.is_file() or p.read_bytes() != content:
                    p.write_bytes(content)
            raise

    # policy ---------------------------------------------------------------------------------------

    def _check_policy(self) -> Any:
        from activelabel.policy import load_policy

        policy = load_policy(self.policy)
        if self.cfg.label not in policy.labels:
            raise LoopError(f"{self.policy}: no label {self.cfg.label!r}; the policy declares "
                              f"{', '.join(policy.labels) or 'none'}")
        for spec in policy.models:
            owned = Path(spec.loc.file).name == self.models_file.name
            if spec.label == self.cfg.label and not owned:
                raise LoopError(f"{self.policy}: model {spec.name!r} already labels {self.cfg.label!r}; "
                                  "remove it from the policy (the loop writes its own) or pick another label")
            if spec.label == self.cfg.label:
                self.model_name = spec.name
                if self.artifact is None and spec.path.is_file():
                    # An earlier run's model: rounds score it and go on from it (its novelty index too).
                    self.artifact = spec.path
                    index = novelty_path_for(spec.path)
                    if index.is_file():
                        self.novelty = NoveltyIndex.load(index)
        enricher = self.cfg.novelty_enricher
        for e in policy.enrichers:
            if e.name == enricher and Path(e.loc.file).name != self.models_file.name:
                self.declare_enricher = False
        if enricher:
            self.novelty_rules = {f"rule:{r.id}" for r in policy.rules_for(self.cfg.label)
                                  if r.when is not None and re.search(rf"\b{re.escape(enricher)}\.", r.when.source)}
        return policy

    def _features(self, policy: Any, decisions: Sequence[StoredDecision]) -> dict[str, str]:
        from activelabel.quality.features import auto_features

        if self.cfg.features:
            return dict(self.cfg.features)
        for spec in policy.models:
            if spec.label == self.cfg.label:
                return {k: str(v) for k, v in spec.features.items()}
        chosen = auto_features(decisions, self.cfg.label, exclude=[self.cfg.id_field.split(".")[0]] if self.cfg.id_field else [])
        self.note("features (every scalar event field but the id; name them with --feature to choose): "
                  + ", ".join(f"{k}={v}" for k, v in chosen.items()))
        return chosen

    # one round's parts ------------------------------------------------------------------------------

    def _label_all(self) -> tuple[dict[str, StoredDecision], dict[str, Any]]:
        from activelabel.engine import Labeler

        labeler = Labeler.from_file(self.policy)
        self.policy_version = labeler.version  # what the next model's card names as its policy
        decisions = labeler.label_batch(self.events)
        self.store.register_policy(labeler.policy)
        self.store.record_many(zip(self.ids, self.events, decisions, strict=True))
        stats = labeler.stats().models
        stored = {d.record_id: d for d in self.store.decisions() if d.record_id in self.by_id}
        return stored, stats

    def _novelty(self, decisions: Mapping[str, StoredDecision], programs: Mapping[str, Any]
                 ) -> tuple[dict[str, float], dict[str, tuple[str, ...]]]:
        """Novelty per record against the current model's index, and each record's template words in order."""
        if self.novelty is None:
            return {}, {}
        from activelabel.quality.features import feature_rows
        from activelabel.quality.novelty import row_text, template_tokens

        ds = [decisions[i] for i in self.ids]
        rows = feature_rows(ds, programs, hide_label=self.cfg.label)
        names = self.novelty.text_features
        tokens = {d.record_id: template_tokens(row_text(r, names)) for d, r in zip(ds, rows, strict=True)}
        return {d.record_id: s for d, s in zip(ds, self.novelty.scores(rows), strict=True)}, tokens

    def _guesses(self, candidates: Sequence[StoredDecision]) -> dict[str, tuple[str | None, float]] | None:
        """What the labeling thinks each candidate is, and how sure it is, for the ``novelty`` strategy:
        a rule's value and own confidence where one of the policy's rules decided, else the model's top
        class and its probability (also where the novelty rule hid the model's answer), else (None, 0)."""
        if self.artifact is None:
            return None
        dists = self._distributions(candidates) or {}
        label = self.cfg.label
        out: dict[str, tuple[str | None, float]] = {}
        for d in candidates:
            source = d.sources.get(label) if label in d.labels else None
            if source and source.startswith("rule:") and source not in self.novelty_rules:
                c = d.confidences.get(label)
                out[d.record_id] = (str(d.labels[label]), 1.0 if c is None else float(c))
            elif dists.get(d.record_id):
                top = max(dists[d.record_id], key=dists[d.record_id].__getitem__)
                out[d.record_id] = (str(top), float(dists[d.record_id][top]))
            else:
                out[d.record_id] = (None, 0.0)
        return out

    def _second_examples(self, guesses: Mapping[str, tuple[str | None, float]], truth: Mapping[str, Any],
                         tokens: Mapping[str, tuple[str, ...]], decisions: Mapping[str, StoredDecision]
                         ) -> dict[str, tuple[str, float]]:
        """Candidates that would be a second, different example of a class reviewed once: the labeling
        guesses that class, and the line has as many words as the class's one reviewed line and differs
        from it while agreeing in at least `MERGE_SIMILARITY` of the positions (what `learn_patterns`
        merges into one template with parameters). Record id → (class, how sure the guess is).

        One line cannot show which of its words is a parameter: the index then calls the class's
        other lines with another word there novel, and the model has one line to learn the class
        from. Classes a rule labels are left out (the rule gives them training lines)."""
        from activelabel.quality.novelty import MERGE_SIMILARITY

        label = self.cfg.label
        pool = set(self.pool)
        seen: dict[str, set[tuple[str, ...]]] = {}  # class -> the distinct templates reviewed
        for rid, value in truth.items():
            if rid in pool:
                seen.setdefault(str(value), set()).add(tokens.get(rid, ()))
        ruled = set()
        for rid in self.pool:
            source = decisions[rid].sources.get(label) if label in decisions[rid].labels else None
            if source and source.startswith("rule:") and source not in self.novelty_rules:
                ruled.add(str(decisions[rid].labels[label]))
        once = {c: next(iter(ts)) for c, ts in seen.items() if len(ts) == 1 and c not in ruled}
        out: dict[str, tuple[str, float]] = {}
        for rid, (cls, sure) in guesses.items():
            if cls is None or cls not in once or rid in truth:
                continue
            ref, toks = once[cls], tokens.get(rid, ())
            if not toks or len(toks) != len(ref) or toks == ref:
                continue
            if sum(1 for a, b in zip(toks, ref, strict=True) if a == b) >= MERGE_SIMILARITY * len(toks):
                out[rid] = (cls, sure)
        return out

    def _annotate(self, rnd: int, picked: Sequence[Any]) -> dict[str, int]:
        """Get the picked items reviewed; returns picked / accepted / rejected / unanswered counts."""
        from activelabel.errors import FeedbackError
        from activelabel.quality.review import label_choices, label_studio_config, label_studio_tasks

        label = self.cfg.label
        wanted = {it.decision.record_id for it in picked}
        if self.answers is not None:
            items = [FeedbackItem(it.decision.record_id, label, self.answers[it.decision.record_id], "answers", HOW,
                                  f"answers for {it.decision.record_id}")
                     for it in picked if it.decision.record_id in self.answers]
            result = apply_feedback(self.store, items)
            self._note_rejected(rnd, result.rejected)
            return {"picked": len(picked), "accepted": result.accepted, "rejected": len(result.rejected),
                    "unanswered": len(picked) - len(items)}
        tasks = self.out / f"round-{rnd + 1}.tasks.json"
        export = self.out / f"round-{rnd + 1}.export.json"
        tasks.write_bytes(orjson.dumps(label_studio_tasks(picked, text_field=self.cfg.dedup_field),
                                       option=orjson.OPT_INDENT_2))
        values, open_set = label_choices(self.store, label, [])
        tasks.with_suffix(".xml").write_text(label_studio_config(label, values, open_set=open_set))
        self.on_wait(tasks, len(picked))
        before = {g.record_id for g in self.store.ground_truth(label)} & wanted
        deadline = time.monotonic() + self.cfg.wait_timeout
        rejected = 0
        unreadable: str | None = None
        while True:
            if export.is_file():
                try:
                    answered, _ = read_feedback_file(export)
                except FeedbackError as exc:  # e.g. still being copied: look again until the deadline
                    unreadable = str(exc)
                else:
                    if answered and all(isinstance(a, FeedbackError) for a in answered) and \
                            time.monotonic() < deadline:
                        unreadable = str(answered[0])  # nothing readable yet: maybe half written
                    else:
                        result = apply_feedback(self.store, answered)
                        self._note_rejected(rnd, result.rejected)
                        rejected = len(result.rejected)
                        unreadable = None
                        break
            have = {g.record_id for g in self.store.ground_truth(label)} & wanted
            if have == wanted or time.monotonic() >= deadline:
                break
            time.sleep(self.cfg.poll_interval)
        have = {g.record_id for g in self.store.ground_truth(label)} & wanted
        if unreadable is not None:
            self.note(f"round {rnd + 1}: could not read {export}: {unreadable}")
        if have != wanted:
            self.note(f"round {rnd + 1}: {len(have)} of {len(picked)} items answered after waiting "
                      f"{self.cfg.wait_timeout:g} s; going on with those (raise --wait-timeout to wait longer)")
        return {"picked": len(picked), "accepted": len(have - before), "rejected": rejected,
                "unanswered": len(wanted - have)}

    def _note_rejected(self, rnd: int, rejected: Sequence[tuple[str, str]]) -> None:
        if rejected:
            where, why = rejected[0]
            self.note(f"round {rnd + 1}: {len(rejected)} answers refused, e.g. {where + ': ' if where else ''}{why}")

    def _train(self, rnd: int, features: Mapping[str, str], programs: Mapping[str, Any],
               decisions: Mapping[str, StoredDecision]) -> bool:
        from activelabel.quality.features import feature_rows, training_pairs
        from activelabel.quality.training import infer_kinds, train_model

        label = self.cfg.label
        truth = {g.record_id: g.value for g in self.store.ground_truth(label) if g.record_id not in self.hold}
        pool = {i: decisions[i] for i in self.pool}
        pairs = training_pairs(pool, truth, label, rule_labels_min_confidence=self.cfg.rule_labels)
        # A rule that routes novel lines to review asserts "unknown", not a class: never a training label.
        pairs = [(d, v, o) for d, v, o in pairs
                 if o != "rule" or (d.sources.get(label) or "") not in self.novelty_rules]
        values = [v for _, v, _ in pairs]
        if len(set(map(str, values))) < 2:
            return False  # one class cannot train a classifier: the rules carry on alone
        rows = feature_rows([d for d, _, _ in pairs], programs, hide_label=label)
        kinds = infer_kinds(list(features), rows)
        trained = train_model(rows, values, label=label, features=features, out_dir=self.out / "models",
                              name=self.model_name, holdout=0.0, seed=self.cfg.seed, feature_kinds=kinds,
                              policy_version=self.policy_version)
        # With the labels it learned: a word that varies between lines of one class is a parameter.
        self.novelty = NoveltyIndex.build(rows, message_features(kinds, rows), labels=values,
                                          threshold=self.cfg.novelty_threshold)
        self.novelty.save(novelty_path_for(trained.artifact))
        if self.cfg.novelty_enricher:
            self.novelty.save(self.novelty_file)  # what the policy's novelty enricher reads from now on
        self.store.record_model_build(label, trained.card["version"], [d.record_id for d, _, o in pairs if o == "truth"])
        self._write_owned(trained.artifact, features,
                          f"round {rnd + 1}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                          f"{len(truth)} reviewed + {len(pairs) - len(truth)} rule labels")
        self.artifact = trained.artifact
        return True

    def _write_owned(self, artifact: Path | None, features: Mapping[str, str], note: str) -> None:
        """(Re)write the loop's included file and make sure the policy includes it."""
        names = self.novelty.text_features if self.novelty is not None else []
        write_models_file(self.models_file, name=self.model_name, label=self.cfg.label, artifact=artifact,
                          features=features, min_confidence=self.cfg.min_confidence, note=note,
                          novelty_file=self.novelty_file if self.cfg.novelty_enricher and self.declare_enricher else None,
                          novelty_enricher=self.cfg.novelty_enricher or "novelty",
                          novelty_key_expr=novelty_key(features, names), nearest_template=self.cfg.nearest_template)
        ensure_include(self.policy, self.models_file.name)

    def _start_owned(self) -> None:
        """Before round 0: an empty novelty index (every line novel: nothing is learned yet) behind the
        enricher, so a policy whose rules read ``novelty.novel`` loads from the first round on."""
        if not self.cfg.novelty_enricher:
            return
        if self.models_file.is_file() and self.novelty_file.is_file():
            # A policy written afresh over the last run's (its files are still there) needs the include again.
            ensure_include(self.policy, self.models_file.name)
            return
        if not self.models_file.is_file():
            from activelabel.errors import PolicyError
            from activelabel.policy import load_policy

            try:  # an enricher of that name in the user's own files: theirs stays, the loop declares none
                if any(e.name == self.cfg.novelty_enricher for e in load_policy(self.policy).enrichers):
                    self.declare_enricher = False
            except PolicyError:
                pass  # e.g. rules reading the enricher before it exists: the loop's file provides it
        NoveltyIndex([], [], self.cfg.novelty_threshold).save(self.novelty_file)
        self._write_owned(None, {}, "before round 1: no model yet")

    def _card_holdout(self, metrics: Mapping[str, Any], model_stats: Mapping[str, Any], classes_unseen: list[str]) -> None:
        """Put this round's holdout figures (about the model built last round) into its card."""
        if self.artifact is None:
            return
        from activelabel.models._artifacts import card_path_for

        card_path = card_path_for(self.artifact)
        card = orjson.loads(card_path.read_bytes())
        rows = int(model_stats.get("rows") or 0)
        low = int(model_stats.get("abstained_low_confidence") or 0)
        card["holdout"] = {
            "source": f"activelabel loop holdout ({self.cfg.holdout:g} of the data by record id, seed {self.cfg.seed})",
            "size": metrics["judged"], "accuracy": metrics["accuracy"], "accuracy_ci95": metrics["accuracy_ci95"],
            "macro_f1": metrics["macro_f1"], "classes_scored": metrics["classes_scored"],
            "classes_seen": card.get("classes"), "classes_unseen": classes_unseen,
            "below_min_confidence_share": low / rows if rows else None,
        }
        card_path.write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))

    # the run ---------------------------------------------------------------------------------------

    def run(self) -> list[Round]:
        from activelabel.models import compile_features
        from activelabel.quality.review import dedup_key_for, select_for_review

        cfg = self.cfg
        label = cfg.label
        with self._undo_on_failure():
            self._start_owned()
            policy = self._check_policy()
            self._check_holdout()
            self._check_answers(policy)
        self.store.set_holdout(label, self.hold)
        if self.answers is not None:
            for rid in self.hold:
                if rid in self.answers:
                    self.store.set_holdout_truth(rid, label, self.answers[rid])
        pool_classes = {str(self.answers[i]) for i in self.pool if i in self.answers} if self.answers else set()
        if pool_classes:
            self.store.set_pool_classes(label, pool_classes)
        hold_truth = {rid: v for (rid, _), v in self.store.holdout_truth(label).items()}
        if not pool_classes:
            pool_classes = {str(g.value) for g in self.store.ground_truth(label)}
        features: dict[str, str] | None = None
        programs: dict[str, Any] = {}
        registry = self.store.registry()
        last_picked: list[Any] = []
        last_annotation: dict[str, int] | None = None  # the review of last round's picks, shown with this round
        for rnd in range(cfg.rounds + 1):
            started = time.perf_counter()
            decisions, stats = self._label_all()
            if features is None:
                features = self._features(policy, [decisions[i] for i in self.pool])
                programs = compile_features(features)
            novelty, tokens = self._novelty(decisions, programs)
            words = {i: frozenset(t) for i, t in tokens.items()}
            novel = {i: self.novelty.is_novel(s) for i, s in novelty.items()} if self.novelty else {}
            for i in self.ids:  # what the policy's novelty rules flagged (before round 1: everything they saw)
                if self.novelty_rules and decisions[i].sources.get(label) in self.novelty_rules:
                    novel[i] = True
            truth_now = {g.record_id: g.value for g in self.store.ground_truth(label)}
            registry = self.store.registry()
            info = registry.labels.get(label) if registry else None
            model_stats: dict[str, Any] = next((s for s in stats.values() if s.get("label", label) == label), {}) if stats else {}
            model_classes: set[str] = set()
            if self.artifact is not None:
                from activelabel.models._artifacts import card_path_for

                model_classes = {str(c) for c in orjson.loads(card_path_for(self.artifact).read_bytes())["classes"]}
            known = {str(v) for v in (info.values if info and info.values else [])} | {str(v) for v in truth_now.values()}
            unpredictable = sorted(known - model_classes) if self.artifact is not None else sorted(known)
            metrics = evaluate(decisions, hold_truth, sorted(self.hold), label, pool_classes, novel)
            self._card_holdout(metrics, model_stats, unpredictable)
            agreement = None
            if last_picked:
                pairs = [(it.predicted, truth_now.get(it.decision.record_id)) for it in last_picked
                         if it.decision.record_id in truth_now]
                agreed = sum(1 for p, t in pairs if p is not None and str(p) == str(t))
                agreement = {"items": len(pairs), "agreed": agreed, "share": agreed / len(pairs) if pairs else None}
            kinds = [_source_kind(decisions[i].sources.get(label) if label in decisions[i].labels else None)
                     for i in self.ids]
            abst = {
                "unset": kinds.count("unset"), "default": kinds.count("default"),
                "model_low_confidence": int(model_stats.get("abstained_low_confidence") or 0),
                "model_timeouts": int(model_stats.get("timeouts") or 0),
                "model_errors": int(model_stats.get("errors") or 0),
                "breaker_open": int(model_stats.get("abstained_breaker_open") or 0),
            }
            hold_novel = [novel.get(i, False) for i in self.hold]
            row = Round(round=rnd, reviewed=len(truth_now), model=self.artifact.name if self.artifact else None,
                        holdout=metrics, agreement=agreement, abstentions=abst, classes_unpredictable=unpredictable,
                        novel_share=(sum(hold_novel) / len(hold_novel)) if hold_novel and (self.novelty or self.novelty_rules) else None,
                        elapsed_s=0.0, annotation=last_annotation)
            if rnd < cfg.rounds:
                exclude = set(truth_now) | self.hold
                candidates = [decisions[i] for i in self.pool]
                dists = None
                if cfg.strategy in ("margin", "entropy", "disagreement") and self.artifact is not None:
                    dists = self._distributions(candidates)
                sure = seconds = None
                if cfg.strategy == "novelty" and (cfg.uncertainty_share > 0 or cfg.second_examples):
                    guesses = self._guesses([c for c in candidates if c.record_id not in exclude])
                    if guesses is not None and cfg.uncertainty_share > 0:
                        sure = {i: c for i, (_, c) in guesses.items()}
                    if guesses is not None and cfg.second_examples and tokens:
                        seconds = self._second_examples(guesses, truth_now, tokens, decisions)
                last_picked = select_for_review(
                    candidates, label=label, budget=cfg.budget, strategy=cfg.strategy,
                    dedup=dedup_key_for(cfg.dedup_field) if cfg.dedup else None, exclude=exclude,
                    rule_values=registry.rule_values if registry else {}, model_distributions=dists,
                    novelty=novelty, template_words=words or None, seed=cfg.seed * 1000 + rnd, fill=True,
                    confidence=sure, uncertainty_share=cfg.uncertainty_share, second_examples=seconds,
                    novelty_threshold=self.novelty.threshold if self.novelty is not None else None)
                last_annotation = self._annotate(rnd, last_picked)
                self._train(rnd, features, programs, decisions)
            row.elapsed_s = round(time.perf_counter() - started, 3)
            self.rounds.append(row)
            self.on_round(row)
        self.store.close()
        return self.rounds

    def _distributions(self, decisions: Sequence[StoredDecision]) -> dict[str, dict[Any, float]] | None:
        from activelabel.models import build_model_labelers
        from activelabel.policy import load_policy
        from activelabel.quality.features import feature_rows

        models = [m for m in build_model_labelers(load_policy(self.policy)) if m.label == self.cfg.label]
        if not models:
            return None
        dists = models[0].distributions(feature_rows(decisions, models[0].feature_programs, hide_label=self.cfg.label))
        return None if dists is None else {d.record_id: p for d, p in zip(decisions, dists, strict=True)}
