"""`activelabel report`: label quality, per-source summary, conflicts and drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from activelabel.cli._common import err, fail, out
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError


def reader_guard(policy: Path | None, registry: Any, clearance: str | None, key_file: Path | None, *, door: str) -> Any:
    """The guard of a reader of stored decisions: sensitivities from ``policy`` when given, else the store's registry.

    None for a labeled file reported without ``--policy``: it was protected when written.
    Exits 2 on an unknown clearance or a named key that cannot be used.
    """
    from activelabel.errors import PseudonymKeyError
    from activelabel.governance import OutputGuard, Protector

    specs: Any = None
    default = "internal"
    if policy is not None:
        from activelabel.policy import load_policy

        loaded = load_policy(policy)
        specs, default = loaded.labels, loaded.outputs.clearance
    elif registry is not None:
        specs = registry.privacy_specs()
    if specs is None:
        return None
    try:
        return OutputGuard.reader(specs, door=door, protector=Protector.configured(key_file), clearance=clearance or default)
    except PseudonymKeyError as exc:
        fail(str(exc), 2)
    except ValueError as exc:
        fail(f"--clearance: {exc}", 2)


def privacy_section(guard: Any) -> dict[str, Any]:
    """What the report says about privacy: the reader's clearance, the labels it sees protected, M9's counts (never values)."""
    snap = guard.counters.snapshot()
    return {"clearance": str(guard.clearance), "protected_labels": sorted(guard.hidden),
            "protected_values": snap["protected_values"], "declared_leaks": snap["declared_leaks"],
            "undeclared_pii": snap["undeclared_pii"], "undeclared_pii_by_field": snap["undeclared_pii_by_field"],
            "canary_recall": snap["canary_recall"]}


@app.command("report")
def report(
    store: Annotated[Path | None, typer.Option("--store", "-s", help="The SQLite decision store.")] = None,
    labeled: Annotated[Path | None, typer.Option("--labeled", help="Instead of a store: labeled JSONL (from activelabel label --explain).")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="With --labeled: truth JSONL of {id, label, value}.")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="With --labeled: field holding the record id (default: content hash).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Only these labels (repeatable).")] = None,
    drift_field: Annotated[list[str] | None, typer.Option("--drift-field", help="Event field to check for drift, e.g. event.level (repeatable).")] = None,
    time_field: Annotated[str | None, typer.Option("--time-field", help="Event field holding the event time (epoch seconds or ISO-8601) for windows and the timeline (default: recording time).")] = None,
    reference_fraction: Annotated[float, typer.Option("--reference-fraction", min=0.05, max=0.95, help="Oldest share of records used as the drift reference window.")] = 0.5,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="With --store: run the policy's models over the recorded events so each model's summary counts every prediction, not only the ones that won.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report with plots here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout (no tables).")] = False,
    clearance: Annotated[str | None, typer.Option("--clearance", help="Highest sensitivity the report's readers may see in clear (default: the policy's outputs.clearance, else internal); pii labels above it are reported by pseudonym, secret ones left out.")] = None,
    pseudonym_key_file: Annotated[Path | None, typer.Option("--pseudonym-key-file", help="Pseudonym keys (default: $ACTIVELABEL_PSEUDONYM_KEY).")] = None,
) -> None:
    """Report accuracy, F1, confusion, coverage, per-source summary, conflicts and drift."""
    from activelabel.quality.report import report_from_files, report_from_store
    from activelabel.quality.store import DecisionStore

    options: dict[str, Any] = {"labels": label or None, "drift_fields": drift_field or (), "reference_fraction": reference_fraction,
               "time_field": time_field}
    try:
        if labeled is not None or truth is not None:
            if labeled is None or truth is None:
                fail("--labeled and --truth go together (or use --store)")
            for p in (labeled, truth):
                if not p.exists():
                    fail(f"{p} does not exist")
            guard = reader_guard(policy, None, clearance, pseudonym_key_file, door="report")
            data = report_from_files(labeled, truth, id_field=id_field, guard=guard, **options)
        else:
            if store is None:
                fail("pass --store DB (from activelabel label --record DB), or --labeled FILE --truth FILE")
            if not store.exists():
                fail(f"store {store} does not exist; record decisions with activelabel label --record {store}")
            labelers = []
            if policy is not None:
                from activelabel.models import build_model_labelers
                from activelabel.policy import load_policy

                labelers = build_model_labelers(load_policy(policy))
            with DecisionStore(store) as db:
                guard = reader_guard(policy, db.registry(), clearance, pseudonym_key_file, door="report")
                data = report_from_store(db, model_labelers=labelers, guard=guard, **options)
        if guard is not None:
            data["privacy"] = privacy_section(guard)
    except ActiveLabelError as exc:
        fail(str(exc))
    if label:
        missing = [name for name in label if name not in data["labels"]]
        if missing:
            fail(f"no decisions or truth for label(s) {', '.join(missing)}")
    refused = data.get("truth_rejected") or {"count": 0, "first": []}
    for item in refused["first"]:
        err.print(f"[yellow]rejected[/] {escape(item['where'])}: {escape(item['reason'])}", highlight=False)
    if refused["count"] > len(refused["first"]):
        err.print(f"… and {refused['count'] - len(refused['first'])} more truth lines refused", highlight=False)
    if refused["count"]:
        err.print(f"the report uses the other {data['ground_truth']} truth items", highlight=False)
    if html is not None:
        from activelabel.quality.render import render_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(data), encoding="utf-8")
    if as_json:
        out.file.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    else:
        from activelabel.quality.render import print_report

        print_report(data, out)
    if html is not None:
        err.print(f"HTML report: {html}", highlight=False)
