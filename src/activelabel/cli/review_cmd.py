"""`activelabel review export|import`: the review queue, in Label Studio's formats."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from activelabel.cli._common import err, fail, out, print_policy_error
from activelabel.cli.feedback_cmd import PolicyOpt, StoreOpt, open_store, print_feedback_result
from activelabel.cli.main import app
from activelabel.errors import FeedbackError, PolicyError

review_app = typer.Typer(help="Pick items for human review (Label Studio tasks) and read the answers back.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


def _model_distributions(policy: Path, label: str, decisions: list[Any]) -> dict[str, Any] | None:
    """Class probabilities of the policy's model for ``label`` over every decision, or None without one."""
    from activelabel.models import build_model_labelers
    from activelabel.policy import load_policy
    from activelabel.quality.features import feature_rows

    models = [m for m in build_model_labelers(load_policy(policy)) if m.label == label]
    if not models:
        return None
    model = models[0]
    dists = model.distributions(feature_rows(decisions, model.feature_programs, hide_label=label))
    return None if dists is None else {d.record_id: p for d, p in zip(decisions, dists, strict=True)}


def _novelty_scores(policy: Path, decisions: list[Any]) -> tuple[dict[str, float], dict[str, frozenset[str]]] | None:
    """Each decision's novelty by the policy's ``type: novelty`` enricher, and its template's words; None without one."""
    from activelabel import Labeler
    from activelabel.quality.novelty import template_words

    plans = [ep for ep in Labeler.from_file(policy).compiled.plan.enrichers if ep.spec.type == "novelty"]
    if not plans:
        return None
    enricher = plans[0]
    scores: dict[str, float] = {}
    words: dict[str, frozenset[str]] = {}
    for d in decisions:
        try:
            text = enricher.key_prog.evaluate({"event": d.event, "labels": {}})
        except Exception:  # noqa: BLE001 - a key CEL cannot compute: scored as the empty text, as the enricher does
            text = ""
        text = text if isinstance(text, str) else ""
        scores[d.record_id] = float(enricher.runtime.lookup(text)["score"])
        words[d.record_id] = template_words(text)
    return scores, words


def _ranking(strategy: str, policy: Path | None, label: str, decisions: list[Any], *, note: bool = True) -> dict[str, Any]:
    """What ``select_for_review`` needs beyond the stored decisions for ``strategy``, with a note when it is missing.

    margin, entropy and disagreement read the policy's model for the label (its whole class
    distribution); novelty reads the policy's ``type: novelty`` enricher. Without them each
    ranks like uncertainty, and says so on stderr instead of degrading silently.
    """
    from activelabel.quality.review import NEEDS_MODEL

    if strategy in NEEDS_MODEL:
        dists = _model_distributions(policy, label, decisions) if policy is not None else None
        if dists is None and note:
            why = "without --policy" if policy is None else f"{policy} has no model giving class probabilities for {label}, so"
            err.print(f"note: {strategy} ranks on the model's class distribution; {why} it has only the "
                      "recorded confidence and ranks like uncertainty", highlight=False, markup=False)
        return {"model_distributions": dists}
    if strategy == "novelty":
        got = _novelty_scores(policy, decisions) if policy is not None else None
        if got is None:
            why = "without --policy" if policy is None else f"{policy} has none, so"
            if note:
                err.print(f"note: novelty ranks by the policy's `type: novelty` enricher (the templates its model "
                          f"was trained on); {why} it ranks like uncertainty", highlight=False, markup=False)
            return {}
        return {"novelty": got[0], "template_words": got[1]}
    return {}


@review_app.command("export")
def review_export(
    store: StoreOpt,
    label: Annotated[str, typer.Option("--label", "-l", help="The label people should check.")],
    budget: Annotated[int, typer.Option("--budget", "-n", min=1, help="How many items to send.")],
    strategy: Annotated[str, typer.Option("--strategy", help="uncertainty | margin | entropy | disagreement | novelty | random")] = "uncertainty",
    output: Annotated[Path, typer.Option("--output", "-o", help="Label Studio tasks JSON to write.")] = Path("review.tasks.json"),
    config: Annotated[Path | None, typer.Option("--config", help="Labeling-config XML to write (default: OUTPUT with .xml).")] = None,
    dedup_field: Annotated[str | None, typer.Option("--dedup-field", help="Field whose template (numbers masked) is sent once (default: the whole event).")] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Allow near-duplicates.")] = False,
    text_field: Annotated[str | None, typer.Option("--text-field", help="Field shown to annotators (default: the event as JSON).")] = None,
    include_reviewed: Annotated[bool, typer.Option("--include-reviewed", help="Also pick items that already have ground truth.")] = False,
    policy: PolicyOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for random choice and tie-breaks.")] = 0,
    clearance: Annotated[str | None, typer.Option("--clearance", help="Highest sensitivity reviewers may see in clear (default: the policy's outputs.clearance, else internal); a label above it is reviewed in a free-text box, its values never listed.")] = None,
    pseudonym_key_file: Annotated[Path | None, typer.Option("--pseudonym-key-file", help="Pseudonym keys (default: $ACTIVELABEL_PSEUDONYM_KEY).")] = None,
) -> None:
    """Write the items whose label most needs a human as Label Studio tasks, plus the labeling config."""
    from activelabel.quality.report import field_value
    from activelabel.quality.review import (
        STRATEGIES,
        dedup_key_for,
        label_choices,
        label_studio_config,
        label_studio_tasks,
        select_for_review,
    )

    if strategy not in STRATEGIES:
        fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    db = open_store(store, policy)
    decisions = list(db.decisions())
    if not decisions:
        fail(f"store {store} holds no decisions; record some with activelabel label --record {store}")
    if label not in db.known_labels():
        fail(f"unknown label {label!r}; the store knows: {', '.join(sorted(db.known_labels())) or 'none'}")
    registry = db.registry()
    from activelabel.cli.report_cmd import reader_guard
    from activelabel.quality.report import guard_stored

    guard = reader_guard(policy, registry, clearance, pseudonym_key_file, door="review")
    free_text = guard is not None and label in guard.hidden
    if guard is not None:  # the one privacy step: reviewers see what their clearance allows
        decisions = guard_stored(decisions, {}, None, guard)[0]
    exclude = set() if include_reviewed else {g.record_id for g in db.ground_truth(label)}
    # The holdout is for scoring: reviewing it would make the scores describe the training data.
    exclude |= db.holdout_ids(label)
    try:
        ranking = _ranking(strategy, policy, label, decisions)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    items = select_for_review(decisions, label=label, budget=budget, strategy=strategy,
                              dedup=None if no_dedup else dedup_key_for(dedup_field), exclude=exclude,
                              rule_values=registry.rule_values if registry else {}, seed=seed, **ranking)
    values, open_set = label_choices(db, label, decisions)
    if free_text:
        values, open_set = [], False  # above the reviewers' clearance: a free-text box, no value listed
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(label_studio_tasks(items, text_field=text_field, free_text=free_text), option=orjson.OPT_INDENT_2))
    config = config or output.with_suffix(".xml")
    config.write_text(label_studio_config(label, values, open_set=open_set, free_text=free_text))
    table = Table(title=f"review queue for {label}: {len(items)} of {len(decisions)} records ({strategy})",
                  title_justify="left")
    for col in ("id", "current value", "confidence", "source", "score", "text"):
        table.add_column(col, overflow="ellipsis", no_wrap=col == "text")
    for item in items[:15]:
        text = field_value(item.decision.event, text_field) if text_field else None
        table.add_row(item.decision.record_id, str(item.predicted), "–" if item.confidence is None else f"{item.confidence:.3f}",
                      str(item.source), f"{item.score:.3f}", "" if text is None else str(text)[:80])
    out.print(table)
    if len(items) > 15:
        out.print(f"… and {len(items) - 15} more")
    out.print(f"tasks: {output}\nlabeling config: {config}\n"
              f"In Label Studio: create a project with the config, import the tasks, annotate, export JSON, then:\n"
              f"  activelabel review import EXPORT.json --store {store}", highlight=False)


@review_app.command("import")
def review_import(
    export: Annotated[Path, typer.Argument(help="Label Studio's JSON export of the reviewed tasks.")],
    store: StoreOpt,
    policy: PolicyOpt = None,
) -> None:
    """Read a Label Studio export into ground truth (cancelled annotations skipped, annotator kept).

    A task that is not ours or holds several choices is refused on its own, with the reason;
    the other tasks are imported."""
    from activelabel.quality.feedback import apply_feedback, read_label_studio_export

    if not export.exists():
        fail(f"export {export} does not exist")
    db = open_store(store, policy)
    try:
        data = orjson.loads(export.read_bytes())
        items, cancelled = read_label_studio_export(data, source=export.name)
    except orjson.JSONDecodeError as exc:
        fail(f"{export}: not valid JSON ({exc}); export the project as JSON from Label Studio")
    except FeedbackError as exc:
        fail(str(exc))
    result = apply_feedback(db, items)
    result.cancelled = cancelled
    print_feedback_result(result, what=export.name)
    if result.rejected and not result.accepted:
        raise typer.Exit(1)


@review_app.command("serve")
def review_serve(
    store: StoreOpt,
    label: Annotated[str, typer.Option("--label", "-l", help="The label to review.")],
    strategy: Annotated[str, typer.Option("--strategy", help="Which item comes next: uncertainty | margin | entropy | disagreement | novelty | random")] = "uncertainty",
    text_field: Annotated[str | None, typer.Option("--text-field", help="Field shown as the item (default: the event as JSON).")] = None,
    dedup_field: Annotated[str | None, typer.Option("--dedup-field", help="Show one item per template of this field.")] = None,
    who: Annotated[str | None, typer.Option("--who", help="Reviewer name kept with each answer.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free port).")] = 8765,
    policy: PolicyOpt = None,
) -> None:
    """The built-in review page: one item at a time with its explanation; keys 1-9 pick, n types a new value, s skips."""
    from activelabel.quality.review import STRATEGIES, dedup_key_for
    from activelabel.quality.review_server import ReviewPage

    if strategy not in STRATEGIES:
        fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    db = open_store(store, policy)
    if label not in db.known_labels():
        fail(f"unknown label {label!r}; the store knows: {', '.join(sorted(db.known_labels())) or 'none'}")
    if strategy != "random":
        try:
            _ranking(strategy, policy, label, list(db.decisions()))  # fails early on a bad policy; notes what is missing
        except PolicyError as exc:
            print_policy_error(exc)
            raise typer.Exit(1) from exc

    def ranking(decisions: list[Any]) -> dict[str, Any]:
        return _ranking(strategy, policy, label, decisions, note=False)  # noted once above, not per page view

    page = ReviewPage(db, label, strategy=strategy, text_field=text_field, who=who, host=host, port=port,
                      dedup=dedup_key_for(dedup_field) if dedup_field else None, ranking=ranking)
    url = _start(page, port)
    out.print(f"review page for {label}: {url}/  (Ctrl-C to stop)", highlight=False, markup=False, soft_wrap=True)
    _wait_forever(page)


@review_app.command("ml-backend")
def review_ml_backend(
    store: StoreOpt,
    label: Annotated[str, typer.Option("--label", "-l", help="The label Label Studio annotates.")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="The policy that makes the predictions.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (Label Studio's default for a backend is 9090).")] = 9090,
    no_learn: Annotated[bool, typer.Option("--no-learn", help="Do not let online (river) models learn from annotations.")] = False,
) -> None:
    """Label Studio's ML backend: /predict sends our labels with their confidence, /webhook stores annotations."""
    from activelabel.quality.review_server import LabelStudioBackend

    if not policy.is_file():
        fail(f"policy file {policy} does not exist")
    db = open_store(store, None)
    try:
        backend = LabelStudioBackend(policy, db, label, host=host, port=port, learn=not no_learn)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    url = _start(backend, port)
    out.print(f"Label Studio ML backend for {label}: {url}  (add it under Settings > Model; "
              f"webhooks: {url}/webhook)", highlight=False, markup=False, soft_wrap=True)
    _wait_forever(backend)


def _wait_forever(server: object) -> None:
    import threading

    stop = threading.Event()
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()  # type: ignore[attr-defined]


def _start(server: Any, port: int) -> str:
    """Start a review server; a port already taken is a one-line error that says what to do."""
    try:
        return str(server.start())
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            fail(f"port {port} cannot be used ({exc.strerror}): pass another --port, or 0 for a free one")
        raise
