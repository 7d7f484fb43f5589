"""`activelabel feedback add|import`: ground truth into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from activelabel.cli._common import err, fail, out, print_policy_error
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError, FeedbackError, PolicyError

feedback_app = typer.Typer(help="Add ground truth (true label values) to the decision store.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="The SQLite decision store (from `activelabel label --record`).")]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", "-p", help="Check labels and values against this policy (remembered in the store).")]


def open_store(store: Path, policy: Path | None, *, must_exist: bool = True) -> Any:
    """The store, with the policy's label registry registered when one is given; exits with a hint on failure."""
    from activelabel.quality.store import DecisionStore

    if must_exist and not store.exists():
        fail(f"store {store} does not exist; record decisions first: activelabel label --policy P --record {store} EVENTS.jsonl")
    loaded = None
    if policy is not None:
        from activelabel.policy import load_policy

        try:
            loaded = load_policy(policy)
        except PolicyError as exc:
            print_policy_error(exc)
            raise typer.Exit(1) from exc
    try:
        return DecisionStore(store, policy=loaded)
    except ActiveLabelError as exc:
        fail(str(exc))


def print_feedback_result(result: Any, *, what: str) -> None:
    table = Table(title=f"feedback from {what}", title_justify="left")
    table.add_column("accepted", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("cancelled (skipped)", justify="right")
    table.add_row(f"[green]{result.accepted}[/]", f"[red]{len(result.rejected)}[/]" if result.rejected else "0",
                  str(result.cancelled))
    out.print(table)
    for where, reason in result.rejected[:20]:
        # The word is markup; the item's own text is escaped so a `[` in a value prints as is.
        err.print(f"[yellow]rejected[/] {escape(where + ': ' if where and where not in reason else '')}{escape(reason)}",
                  highlight=False)
    if len(result.rejected) > 20:
        err.print(f"… and {len(result.rejected) - 20} more rejections (all kept in the store's feedback_rejections table)")


def learn_from(store: Any, policy: Path, items: list[Any]) -> int:
    """Online (river) models of the policy learn from accepted items; returns how many they learned."""
    from activelabel.models import build_model_labelers
    from activelabel.policy import load_policy
    from activelabel.quality.features import bindings_for
    from activelabel.quality.training import learn_online

    learned = 0
    for lab in build_model_labelers(load_policy(policy)):
        if lab.predictor.kind != "river":
            continue
        pairs = []
        for item in items:
            decision = store.decision(item.record_id)
            if item.label == lab.label and decision is not None:
                pairs.append((lab.compute_features(bindings_for(decision, hide_label=lab.label)), item.value))
        learned += learn_online(lab, pairs)
    return learned


@feedback_app.command("add")
def feedback_add(
    store: StoreOpt,
    record_id: Annotated[str, typer.Option("--id", help="The record id (its --id-field value or content hash).")],
    label: Annotated[str, typer.Option("--label", "-l", help="The label this truth is for.")],
    value: Annotated[str, typer.Option("--value", "-v", help="The true value.")],
    who: Annotated[str | None, typer.Option("--who", help="Who says so (kept with the truth).")] = None,
    policy: PolicyOpt = None,
    learn: Annotated[bool, typer.Option("--learn", help="Online (river) models of --policy learn from it now.")] = False,
) -> None:
    """Add one true value for one label of one recorded decision."""
    if learn and policy is None:
        fail("--learn needs --policy (the policy whose river models should learn)")
    db = open_store(store, policy)
    try:
        truth = db.add_ground_truth(record_id, label, value, who=who, how="cli")
    except FeedbackError as exc:
        fail(f"{exc} (nothing stored; the refusal is counted)")
    registry = db.registry()
    info = registry.labels.get(truth.label) if registry is not None else None
    shown = f"{truth.value!r}" if info is None or info.sensitivity not in ("pii", "secret") else f"‹{info.sensitivity}, not shown›"
    out.print(f"[green]stored[/] {truth.record_id} {truth.label} = {escape(shown)}", highlight=False)
    if learn and policy is not None:
        from activelabel.quality.feedback import FeedbackItem

        n = learn_from(db, policy, [FeedbackItem(record_id, label, truth.value)])
        out.print(f"online models learned from {n} item(s)")


@feedback_app.command("import")
def feedback_import(
    file: Annotated[Path, typer.Argument(help="JSONL of {id, label, value[, who]} or a Label Studio JSON export.")],
    store: StoreOpt,
    policy: PolicyOpt = None,
    who: Annotated[str | None, typer.Option("--who", help="Annotator to record when an item names none.")] = None,
    learn: Annotated[bool, typer.Option("--learn", help="Online (river) models of --policy learn from accepted items.")] = False,
) -> None:
    """Import ground truth; each item is accepted or refused on its own, with the reason."""
    from activelabel.quality.feedback import apply_feedback, read_feedback_file

    if learn and policy is None:
        fail("--learn needs --policy (the policy whose river models should learn)")
    if not file.exists():
        fail(f"feedback file {file} does not exist")
    db = open_store(store, policy)
    try:
        items, cancelled = read_feedback_file(file)
    except FeedbackError as exc:
        fail(f"{exc}; nothing imported")
    result = apply_feedback(db, items, who=who)
    result.cancelled = cancelled
    print_feedback_result(result, what=file.name)
    if learn and policy is not None and result.accepted_items:
        n = learn_from(db, policy, result.accepted_items)
        out.print(f"online models learned from {n} item(s)")
    if result.rejected and not result.accepted:
        raise typer.Exit(1)
