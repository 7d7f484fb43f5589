"""`activelabel report`: label quality, per-source summary, conflicts and drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from activelabel.cli._common import err, fail, out
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError


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
            data = report_from_files(labeled, truth, id_field=id_field, **options)
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
                data = report_from_store(db, model_labelers=labelers, **options)
    except ActiveLabelError as exc:
        fail(str(exc))
    if label:
        missing = [name for name in label if name not in data["labels"]]
        if missing:
            fail(f"no decisions or truth for label(s) {', '.join(missing)}")
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
