"""`activelabel label`, `explain` and `demo`: label JSONL records with a policy."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from activelabel.cli._common import err, fail, open_labeler, out
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError
from activelabel.sinks import DeadLetterSink, JsonlSink
from activelabel.sources import JsonlSource, ReadLimits
from activelabel.sources.jsonl import DEFAULT_MAX_DEPTH, DEFAULT_MAX_LINE_BYTES

if TYPE_CHECKING:
    from activelabel.engine import Labeler
    from activelabel.engine.record_loop import Block

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class RunSummary:
    """Counts of one labeling run; ``records_in == labeled + dead_lettered`` always."""

    def __init__(self) -> None:
        self.records_in = 0
        self.labeled = 0
        self.dead_lettered = 0
        self.started = time.perf_counter()
        self.elapsed = 0.0


def run_label(
    labeler: Labeler,
    inputs: list[str],
    output: str | None,
    dlq: str | None,
    *,
    explain: bool = False,
    labels_field: str = "labels",
    limits: ReadLimits = ReadLimits(),
    recorder: Any = None,
    progress: bool = False,
) -> tuple[RunSummary, DeadLetterSink]:
    """Label every record of ``inputs`` into ``output``; bad lines go to ``dlq``."""
    source = JsonlSource(inputs, limits)
    sink = JsonlSink(output)
    dead = DeadLetterSink(dlq)
    summary = RunSummary()
    total_bytes = sum(Path(p).stat().st_size for p in inputs if p != "-" and Path(p).exists() and not p.endswith(".gz"))
    bar = task = None
    if progress and total_bytes:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True)
        task = bar.add_task("labeling", total=total_bytes)
        bar.start()
    from activelabel.engine.record_loop import JsonlFileOutput, RecordLoop, jsonl_blocks

    loop = RecordLoop(labeler, limits=limits, labels_field=labels_field, explain=explain, on_decision=recorder)

    def blocks() -> Iterator[Block]:
        for block in jsonl_blocks(source):
            yield block
            if bar is not None and task is not None:
                bar.update(task, completed=source.bytes_read)

    try:
        counts = loop.run(blocks(), JsonlFileOutput(sink, dead))
    finally:
        if bar is not None:
            bar.stop()
        sink.close()
        dead.close()
    summary.records_in = counts.records_in
    summary.labeled = counts.labeled
    summary.dead_lettered = dead.count
    summary.elapsed = time.perf_counter() - summary.started
    return summary, dead


def print_summary(labeler: Labeler, summary: RunSummary, dead: DeadLetterSink, output: str | None, dlq: str | None) -> None:
    """The end-of-run report on stderr: counts that add up, coverage, rule errors."""
    stats = labeler.stats()
    rate = summary.records_in / summary.elapsed if summary.elapsed > 0 else 0.0
    ok = summary.records_in == summary.labeled + summary.dead_lettered
    err.print(
        f"[bold]{summary.records_in}[/] records in = [green]{summary.labeled}[/] labeled + "
        f"[{'red' if summary.dead_lettered else 'green'}]{summary.dead_lettered}[/] dead-lettered"
        f"{'' if ok else '  [bold red](MISMATCH)[/]'}   "
        f"{summary.elapsed:.2f}s, {rate:,.0f} records/s   policy {labeler.policy.metadata.name or ''} {labeler.version[:19]}",
        highlight=False,
    )
    if output:
        err.print(f"labeled output: {output}", highlight=False)
    if summary.dead_lettered:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(dead.by_kind.items()))
        err.print(f"dead letters ({kinds}): {dlq or '(not written: pass --dlq FILE)'}", highlight=False)
    table = Table(title="labels", title_justify="left")
    table.add_column("label")
    table.add_column("set", justify="right")
    table.add_column("coverage", justify="right")
    table.add_column("set by (events)")
    n = max(summary.labeled, 1)
    values = _top_values(labeler)
    for name, count in stats.label_set.items():
        table.add_row(name, f"{count:,}", f"{count / n:.1%}", values.get(name, ""))
    err.print(table)
    absent = {k: v for k, v in stats.rule_absent.items() if v}
    failed = {k: v for k, v in stats.rule_failures.items() if v}
    if absent:
        err.print("rules that read a field or label with no value (absent or null), so the rule did not match; "
                  "normal for optional fields and lookup misses:", highlight=False)
        at = Table()
        at.add_column("rule")
        at.add_column("events", justify="right")
        for rule, count in sorted(absent.items(), key=lambda kv: -kv[1]):
            at.add_row(rule, f"{count:,}")
        err.print(at)
    if failed:
        err.print("rule errors: the rule did not match because a value had the wrong type or did not fit its label:",
                  highlight=False)
        et = Table()
        et.add_column("rule")
        et.add_column("errors", justify="right")
        for rule, count in sorted(failed.items(), key=lambda kv: -kv[1]):
            et.add_row(rule, f"{count:,}")
        err.print(et)


def _short(items: list[str]) -> str:
    return ", ".join(i.removeprefix("rule:") for i in items)


def _top_values(labeler: Labeler) -> dict[str, str]:
    """Per label, the rules/defaults that set it most (value names only for non-sensitive labels)."""
    out_: dict[str, str] = {}
    for name, counts in labeler.hits_by_source().items():
        if counts:
            best = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
            out_[name] = ", ".join(f"{src} ({count:,})" for src, count in best)
    return out_


@app.command()
def label(
    inputs: Annotated[list[str] | None, typer.Argument(help="JSONL inputs (files, .gz, or - for stdin). Default: stdin.")] = None,
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file.")] = Path("policy.yaml"),
    output: Annotated[str | None, typer.Option("--output", "-o", help="Labeled JSONL output (default: stdout).")] = None,
    dlq: Annotated[str | None, typer.Option("--dlq", help="Dead-letter JSONL for lines that cannot be labeled (default: OUTPUT.dlq.jsonl, or activelabel.dlq.jsonl when writing to stdout).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add a label_meta object saying how each label was decided.")] = False,
    labels_field: Annotated[str, typer.Option("--labels-field", help="Name of the field the labels are written to.")] = "labels",
    max_line_bytes: Annotated[int, typer.Option("--max-line-bytes", help="Longer lines go to the DLQ.")] = DEFAULT_MAX_LINE_BYTES,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Deeper-nested objects go to the DLQ (1024 is checked by the parser for free; a lower limit costs a scan).")] = DEFAULT_MAX_DEPTH,
    record: Annotated[Path | None, typer.Option("--record", help="Record each decision in this SQLite store (for feedback and reports).")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="Field holding a stable record id for --record (default: content hash).")] = None,
    record_sample: Annotated[float, typer.Option("--record-sample", help="Share of decisions to record with --record (by record id, deterministic).")] = 1.0,
    track_conflicts: Annotated[bool, typer.Option("--conflicts", help="Evaluate every rule to count conflicts between rules.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
) -> None:
    """Label JSONL records with a policy: each object gets a `labels` object; bad lines go to the DLQ."""
    inputs = inputs or ["-"]
    for path in inputs:
        if path != "-" and not Path(path).exists():
            fail(f"input {path} does not exist")
    if dlq is None:
        dlq = f"{output}.dlq.jsonl" if output and output != "-" else "activelabel.dlq.jsonl"
    labeler = open_labeler(policy, track_conflicts=track_conflicts)
    recorder = None
    store = None
    if record is not None:
        from activelabel.quality.store import DecisionStore, record_id_for

        if not 0.0 < record_sample <= 1.0:
            fail(f"--record-sample must be above 0 and at most 1, not {record_sample}", 2)
        store = DecisionStore(record, policy=labeler.policy, sample_rate=record_sample)
        if id_field is None and not quiet:
            # Feedback names a record by its id: say how to know it before any decision is stored.
            err.print(f"note: decisions in {record} are keyed by a content hash of each record (sha256:…, "
                      "not in the output); pass --id-field FIELD to key them by a field of your records, so "
                      "feedback can name them; `activelabel review export` lists recorded ids",
                      highlight=False, markup=False)

        def recorder(event: dict[str, Any], decision: Any) -> None:
            store.record(record_id_for(event, id_field), event, decision)

    try:
        summary, dead = run_label(
            labeler, inputs, output, dlq, explain=explain, labels_field=labels_field,
            limits=ReadLimits(max_line_bytes, max_depth), recorder=recorder, progress=sys.stderr.isatty() and not quiet,
        )
    except ActiveLabelError as exc:
        fail(str(exc))
    finally:
        if store is not None and hasattr(store, "close"):
            store.close()
    if not quiet:
        print_summary(labeler, summary, dead, output, dlq)


@app.command()
def explain(
    event: Annotated[str, typer.Argument(help="The event: a JSON object, or - to read it from stdin.")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file.")] = Path("policy.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
    show_sensitive: Annotated[bool, typer.Option("--show-sensitive", help="Show values of pii/secret labels instead of masking them.")] = False,
) -> None:
    """Show how each label of one event was decided: value, confidence, source, rules matched and lost."""
    text = sys.stdin.read() if event == "-" else event
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        fail(f"the event is not valid JSON: {exc}. Pass a JSON object, e.g. '{{\"status\": 503}}'", 2)
    if not isinstance(obj, dict):
        fail("the event must be a JSON object", 2)
    labeler = open_labeler(policy)
    decision = labeler.label(obj)
    info = decision.explain()
    if as_json:
        out.print_json(orjson.dumps(info).decode())
        return
    specs = labeler.policy.labels
    table = Table(title=f"{info['policy']} {info['policy_version'][:19]}  ({info['elapsed_us']} µs)", title_justify="left")
    for col in ("label", "value", "conf.", "source", "matched rules", "lost", "errors"):
        table.add_column(col, overflow="fold")
    for name, entry in info["labels"].items():
        if not entry["set"]:
            value = "[dim]unset[/]"
        elif specs[name].sensitivity in ("pii", "secret") and not show_sensitive:
            value = f"[dim]‹{specs[name].sensitivity}›[/]"
        else:
            value = orjson.dumps(entry["value"]).decode()
        conf = f"{entry['confidence']:.2f}" if entry["confidence"] is not None else ""
        errors = "; ".join(f"{e['source']}: {e['error']}" for e in entry["errors"])
        table.add_row(name, value, conf, entry["source"] or "", _short(entry["matched"]), _short(entry["lost"]), errors)
    out.print(table)  # fits a terminal's width; whole lines in a pipe (cli/_common.py)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the labeled records go.")] = Path("out/edge.labeled.jsonl"),
    show: Annotated[int, typer.Option("--show", help="How many labeled records to print.")] = 8,
) -> None:
    """Label the shipped example requests with the shipped edge policy, and show the result."""
    policy = EXAMPLES / "edge" / "policy.yaml"
    events = EXAMPLES / "edge" / "requests.jsonl"
    if not events.exists():
        fail(f"the example data {events} is missing; run from a full checkout")
    labeler = open_labeler(policy)
    tests = labeler.run_tests()
    failed = [t for t in tests if not t.passed]
    err.print(f"policy {labeler.policy.metadata.name} {labeler.version[:19]}: {len(tests) - len(failed)}/{len(tests)} policy tests pass", highlight=False)
    dlq = str(output) + ".dlq.jsonl"
    summary, dead = run_label(labeler, [str(events)], str(output), dlq, progress=sys.stderr.isatty())
    # One record per distinct outcome, so the table shows what the policy does, not 8 images.
    shown: dict[tuple[Any, ...], dict[str, Any]] = {}
    with output.open("rb") as fh:
        for line in fh:
            rec = orjson.loads(line)
            key = tuple(rec["labels"].get(k) for k in ("error_class", "bot", "static_asset", "priority", "client_kind"))
            shown.setdefault(key, rec)
            if len(shown) >= show:
                break
    specs = labeler.policy.labels
    table = Table(title=f"{len(shown)} labeled records of {events.name}, one per distinct outcome", title_justify="left")
    table.add_column("status")
    table.add_column("path", overflow="ellipsis", no_wrap=True, max_width=34)
    table.add_column("user agent", overflow="ellipsis", no_wrap=True, max_width=26)
    visible = [name for name, spec in specs.items() if spec.sensitivity not in ("pii", "secret")]
    for name in visible:
        table.add_column(name)
    for rec in shown.values():
        labels = rec["labels"]
        cells = [orjson.dumps(labels[n]).decode().strip('"') if n in labels else "[dim]-[/]" for n in visible]
        table.add_row(str(rec.get("status")), str(rec.get("path")), str(rec.get("user_agent")), *cells)
    out.print(table)  # fits a terminal's width; whole lines in a pipe (cli/_common.py)
    hidden = [name for name in specs if name not in visible]
    if hidden:
        out.print(f"[dim]not shown: {', '.join(hidden)} (sensitivity pii/secret)[/]")
    print_summary(labeler, summary, dead, str(output), dlq)
