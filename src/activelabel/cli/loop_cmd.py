"""`activelabel loop`: the active loop as one command, scored on a holdout review never touches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from activelabel.cli._common import err, fail, out, print_policy_error, printable
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError, PolicyError

COLUMNS = ("round", "reviewed", "macro-F1", "accuracy (95% CI)", "coverage", "unseen->abstain/novel",
           "novel", "agreed", "abstained", "cannot predict")


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def round_cells(r: Any) -> list[str]:
    """One row of the per-round table, as plain strings (terminal, pipe and file alike)."""
    h = r.holdout
    ci = h.get("accuracy_ci95")
    acc = _f(h.get("accuracy")) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    agree = "-" if not r.agreement or r.agreement["share"] is None else \
        f"{r.agreement['agreed']}/{r.agreement['items']}"
    ab = r.abstentions
    missing = r.classes_unpredictable
    cannot = "-" if not missing else (f"{len(missing)}: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    return [str(r.round), str(r.reviewed), _f(h.get("macro_f1")), acc, _f(h.get("coverage")),
            _f(h.get("unseen_abstained_or_novel")), _f(r.novel_share), agree,
            f"{ab['unset'] + ab['default']} (low conf {ab['model_low_confidence']}, timeouts {ab['model_timeouts']})",
            cannot]


def format_table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; never truncated or wrapped."""
    table = [list(COLUMNS), *([printable(c, one_line=True) for c in r] for r in rows)]  # class names are data
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


def _parse_features(specs: list[str]) -> dict[str, str]:
    features = {}
    for spec in specs:
        name, sep, expr = spec.partition("=")
        if not sep or not name.strip().isidentifier() or not expr.strip():
            fail(f"--feature {spec!r}: write NAME=CEL, e.g. --feature msg=event.content")
        features[name.strip()] = expr.strip()
    return features


@app.command("loop")
def loop(
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy to start from; it is updated in place to reference the newest model (through one include of a file the loop owns).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="JSON Lines of events: the review pool and the holdout.")],
    label: Annotated[str, typer.Option("--label", "-l", help="The label to learn.")],
    id_field: Annotated[str | None, typer.Option("--id-field", help="Event field holding the record id (as for label --record); default: a content hash.")] = None,
    feature: Annotated[list[str] | None, typer.Option("--feature", "-f", help="NAME=CEL feature (repeatable); default as train's: the policy model's features, else every scalar event field.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, help="Rounds of review.")] = 5,
    budget: Annotated[int, typer.Option("--budget", "-n", min=1, help="Items reviewed per round.")] = 30,
    strategy: Annotated[str, typer.Option("--strategy", help="novelty | uncertainty | margin | entropy | disagreement | random")] = "novelty",
    holdout: Annotated[float, typer.Option("--holdout", min=0.0, max=0.9, help="Share of records held out for scoring, chosen by record id before round 1 (0: evaluate elsewhere).")] = 0.5,
    holdout_templates: Annotated[float, typer.Option("--holdout-templates", min=0.0, max=0.9, help="Also hold out every line of this share of templates (the --dedup-field template key, by a hash with the seed): templates, and often classes, review never had, to measure how novel lines are handled.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the holdout, random choice and training.")] = 0,
    answers: Annotated[Path | None, typer.Option("--answers", help="Truth JSONL ({id, label, value} per line, as feedback import reads): a simulated annotator. Without it the loop writes Label Studio tasks and waits for answers.")] = None,
    output: Annotated[Path, typer.Option("--out", "-o", help="Directory for the store, models, round tasks and the per-round table.")] = Path("loop"),
    dedup_field: Annotated[str | None, typer.Option("--dedup-field", help="Field whose template is sent to review once (also the text shown); default: the whole event.")] = None,
    no_dedup: Annotated[bool, typer.Option("--no-dedup", help="Allow near-duplicates in a round (one per template is the default).")] = False,
    rule_labels: Annotated[float | None, typer.Option("--rule-labels", min=0.0, max=1.0, help="Also train on pool lines a rule labeled with at least this confidence.")] = 0.9,
    no_rule_labels: Annotated[bool, typer.Option("--no-rule-labels", help="Train on reviewed items only.")] = False,
    min_confidence: Annotated[float, typer.Option("--min-confidence", min=0.0, max=1.0, help="The model abstains below this.")] = 0.5,
    novelty_threshold: Annotated[float, typer.Option("--novelty-threshold", min=0.0, max=1.0, help="A line at or above this novelty is flagged novel.")] = 0.4,
    uncertainty_share: Annotated[float, typer.Option("--uncertainty-share", min=0.0, max=1.0, help="--strategy novelty: share of each round's budget spent first on the lines the labeling is least sure of (the model's own confidence); the rest goes to the most novel.")] = 0.5,
    no_second_examples: Annotated[bool, typer.Option("--no-second-examples", help="--strategy novelty: do not spend what is left of a round, once no line is novel, on a second example of each class reviewed once (a line the model guesses is of that class, as long as its one reviewed line, differing in a few words).")] = False,
    nearest_template: Annotated[bool, typer.Option("--nearest-template/--no-nearest-template", help="Where the model is below --min-confidence, label a line whose template the model was trained on with that template's class (the model entry's `below_confidence: nearest-template`); --no-nearest-template: the model abstains there.")] = True,
    novelty_enricher: Annotated[str, typer.Option("--novelty-enricher", help="Name of the `type: novelty` enricher the loop keeps in its file (rules read NAME.novel and NAME.score); '' for none.")] = "novelty",
    wait_timeout: Annotated[float, typer.Option("--wait-timeout", min=0.0, help="Without --answers: seconds to wait for a round's answers before going on with those that came.")] = 3600.0,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.01, help="Without --answers: seconds between looks for answers.")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per round on stdout, then a summary object.")] = False,
) -> None:
    """Rounds of select -> annotate -> import -> train -> relabel -> evaluate on a holdout."""
    from activelabel.quality.loop import Loop, LoopConfig
    from activelabel.quality.review import STRATEGIES

    if novelty_enricher and not novelty_enricher.isidentifier():
        fail(f"--novelty-enricher {novelty_enricher!r}: must be an identifier (rules read it as NAME.novel)")
    if strategy not in STRATEGIES:
        fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    for path, what in ((policy, "policy"), (data, "--data"), (answers, "--answers")):
        if path is not None and not path.exists():
            fail(f"{what} {path} does not exist")
        if path is not None and path.is_dir():
            fail(f"{what} {path} is a directory; give a file")
    cfg = LoopConfig(policy=policy, data=data, label=label, out=output, id_field=id_field,
                     features=_parse_features(feature or []), rounds=rounds, budget=budget, strategy=strategy,
                     holdout=holdout, holdout_templates=holdout_templates, seed=seed, answers=answers, dedup_field=dedup_field, dedup=not no_dedup,
                     rule_labels=None if no_rule_labels else rule_labels, min_confidence=min_confidence,
                     novelty_threshold=novelty_threshold, novelty_enricher=novelty_enricher or None,
                     uncertainty_share=uncertainty_share, second_examples=not no_second_examples,
                     nearest_template=nearest_template,
                     wait_timeout=wait_timeout,
                     poll_interval=poll_interval)
    rows: list[list[str]] = []

    def on_round(r: Any) -> None:
        rows.append(round_cells(r))
        if json_out:
            sys.stdout.write(orjson.dumps(r.to_json()).decode() + "\n")
            sys.stdout.flush()
        else:
            out.print(format_table(rows).splitlines()[-1] if len(rows) > 1 else format_table(rows),
                      highlight=False, markup=False, soft_wrap=True)
            out.file.flush()  # a pipe or a file sees each round as it ends, not after the next wait

    def on_note(text: str) -> None:
        err.print(text, highlight=False, markup=False, soft_wrap=True)

    def on_wait(tasks: Path, n: int) -> None:
        err.print(f"waiting for {n} answers: import {tasks} into Label Studio (config {tasks.with_suffix('.xml')}) "
                  f"and drop its JSON export at {tasks.with_name(tasks.name.replace('.tasks.json', '.export.json'))}, "
                  "or answer with `activelabel review serve` / the Label Studio ML backend on the same store",
                  highlight=False, markup=False, soft_wrap=True)

    try:
        runner = Loop(cfg, on_round=on_round, on_wait=on_wait, on_note=on_note)
        if not json_out:
            withheld = f", {len(runner.withheld)} of them of withheld templates" if runner.withheld else ""
            scored = "scores are on the holdout" if runner.hold else \
                "no holdout (--holdout 0): nothing is scored here, evaluate elsewhere"
            err.print(f"{len(runner.ids)} records: {len(runner.pool)} in the review pool, {len(runner.hold)} held out "
                      f"(seed {seed}{withheld}); {scored}", highlight=False, markup=False, soft_wrap=True)
        result = runner.run()
    except PolicyError as exc:
        if exc.issues:
            print_policy_error(exc)
            raise typer.Exit(1) from exc
        fail(str(exc))
    except ActiveLabelError as exc:
        fail(str(exc))
    output.mkdir(parents=True, exist_ok=True)
    # A run on the same --out goes on from the last one: its rows are added, the earlier runs' kept.
    table, history = output / "rounds.txt", output / "rounds.jsonl"
    earlier = table.read_text() + "\n" if table.is_file() and table.stat().st_size else ""
    table.write_text(earlier + format_table(rows) + "\n")
    with history.open("ab") as fh:
        fh.write(b"".join(orjson.dumps(r.to_json()) + b"\n" for r in result))
    summary = {"policy": str(policy), "models_file": str(runner.models_file), "model": result[-1].model,
               "rounds": len(result) - 1, "reviewed": result[-1].reviewed, "holdout": result[-1].holdout,
               "out": str(output)}
    if json_out:
        sys.stdout.write(orjson.dumps({"summary": summary}).decode() + "\n")
    else:
        out.print(f"policy {policy} now includes {runner.models_file.name} (model {result[-1].model}); "
                  f"table: {output / 'rounds.txt'}", highlight=False, markup=False, soft_wrap=True)
