"""`activelabel train`: fit a model for one label from ground truth, or let online models learn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from activelabel.cli._common import err, fail, out, print_policy_error
from activelabel.cli.feedback_cmd import PolicyOpt, StoreOpt, learn_from, open_store
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError, PolicyError


def _parse_features(specs: list[str]) -> dict[str, str]:
    features = {}
    for spec in specs:
        name, sep, expr = spec.partition("=")
        if not sep or not name.strip().isidentifier() or not expr.strip():
            fail(f"--feature {spec!r}: write NAME=CEL, e.g. --feature msg=event.content")
        features[name.strip()] = expr.strip()
    return features


def _policy_features(policy_path: Path, label: str) -> tuple[dict[str, str], str | None, str | None]:
    """(features, model name, policy version) of the policy's model for ``label``, if it has one."""
    from activelabel.policy import load_policy

    try:
        policy = load_policy(policy_path)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    for spec in policy.models:
        if spec.label == label:
            return {k: str(v) for k, v in spec.features.items()}, spec.name, policy.version
    return {}, None, policy.version


@app.command("train")
def train(
    store: StoreOpt,
    label: Annotated[str, typer.Option("--label", "-l", help="The label to learn.")],
    model_type: Annotated[str, typer.Option("--model-type", help="sklearn | onnx | river")] = "sklearn",
    feature: Annotated[list[str] | None, typer.Option("--feature", "-f", help="NAME=CEL feature (repeatable); default: the policy model's features, else every scalar event field.")] = None,
    output_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the artifact and its model card.")] = Path("models"),
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the policy's model for the label, else LABEL_model).")] = None,
    holdout: Annotated[float, typer.Option("--holdout", min=0.0, max=0.5, help="Share of ground truth held out for the card's metrics.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    policy: PolicyOpt = None,
    online: Annotated[bool, typer.Option("--online", help="Instead of training: the policy's river models learn from all ground truth of the label.")] = False,
    rule_labels: Annotated[float | None, typer.Option("--rule-labels", min=0.0, max=1.0, help="Also learn from recorded lines a rule labeled with at least this confidence (weak labels; ground truth wins).")] = None,
) -> None:
    """Train a model from the store's ground truth; write a versioned artifact and model card."""
    from activelabel.models import compile_features
    from activelabel.quality.features import auto_features, feature_rows, training_pairs
    from activelabel.quality.training import MODEL_TYPES, train_model

    if model_type not in MODEL_TYPES:
        fail(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    db = open_store(store, policy)
    truths = db.ground_truth(label)
    if not truths:
        fail(f"no ground truth for {label!r} in {store}; add some with activelabel feedback import or review import")
    if online:
        if policy is None:
            fail("--online needs --policy (the river models to update)")
        from activelabel.quality.feedback import FeedbackItem

        n = learn_from(db, policy, [FeedbackItem(t.record_id, t.label, t.value) for t in truths])
        out.print(f"online models for {label} learned from {n} item(s) and were saved")
        return
    if rule_labels is None:
        by_id = {t.record_id: d for t in truths if (d := db.decision(t.record_id)) is not None}
    else:
        by_id = {d.record_id: d for d in db.decisions()}
    triples = training_pairs(by_id, {t.record_id: t.value for t in truths}, label,
                             rule_labels_min_confidence=rule_labels)
    pairs = [(d, v) for d, v, _ in triples]
    weak = sum(1 for *_, origin in triples if origin == "rule")
    features = _parse_features(feature or [])
    policy_version, policy_model = None, None
    if policy is not None:
        from_policy, policy_model, policy_version = _policy_features(policy, label)
        features = features or from_policy
    if not features:
        features = auto_features([d for d, _ in pairs], label)
        err.print(f"features (automatic; choose with --feature NAME=CEL): {', '.join(features)}", highlight=False)
    try:
        programs = compile_features(features)
        rows = feature_rows([d for d, _ in pairs], programs, hide_label=label)
        trained = train_model(rows, [v for _, v in pairs], label=label, features=features, out_dir=output_dir,
                              name=name or policy_model, model_type=model_type, holdout=holdout, seed=seed,
                              policy_version=policy_version)
    except ActiveLabelError as exc:
        fail(str(exc))
    card = trained.card
    table = Table(title=f"trained {card['name']} for {label}", title_justify="left")
    table.add_column("field")
    table.add_column("value")
    table.add_row("artifact", str(trained.artifact))
    table.add_row("model card", str(trained.card_path))
    table.add_row("version", card["version"])
    table.add_row("training items", f"{card['training_data']['size']}" + (f" ({weak} from rules)" if weak else ""))
    table.add_row("classes", ", ".join(map(str, card["classes"])))
    hold = card["holdout"]
    table.add_row("holdout", "none (under 10 items)" if hold is None else
                  f"{hold['size']} items: accuracy {hold['accuracy']:.3f}, macro-F1 {hold['macro_f1']:.3f}")
    out.print(table)
    # A policy reads a model's path from its own folder: relative to --policy, else absolute.
    where = f"relative to {policy.parent}" if policy is not None else "absolute; pass --policy to get it relative to the policy"
    out.print(f"Reference it from the policy (path {where}):\n", highlight=False, markup=False)
    out.print(trained.policy_snippet(relative_to=policy.parent if policy is not None else None),
              highlight=False, markup=False, soft_wrap=True)
