"""`activelabel label`, `explain` and `demo`: label JSONL records with a policy."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from activelabel.cli._common import err, fail, open_labeler, out
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError
from activelabel.sinks import DeadLetterSink, JsonlSink, splice_fields
from activelabel.sources import BadRecord, JsonlSource, ReadLimits
from activelabel.sources.jsonl import DEFAULT_MAX_DEPTH, DEFAULT_MAX_LINE_BYTES, PARSER_MAX_DEPTH, decode_line

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
    labeler: Any,
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
    try:
        if not explain and recorder is None:
            _label_plain(labeler, source, sink, dead, summary, labels_field, limits, bar, task)
        else:
            _label_decisions(labeler, source, sink, dead, summary, labels_field, explain, recorder, bar, task)
    finally:
        if bar is not None:
            bar.stop()
        sink.close()
        dead.close()
    summary.dead_lettered = dead.count
    summary.elapsed = time.perf_counter() - summary.started
    return summary, dead


def _label_decisions(labeler: Any, source: JsonlSource, sink: JsonlSink, dead: DeadLetterSink, summary: RunSummary,
                     labels_field: str, explain: bool, recorder: Any, bar: Any, task: Any) -> None:
    """The loop that needs whole Decisions: --explain and --record."""
    label = labeler.label
    write = sink.write_raw
    for item in source:
        summary.records_in += 1
        if item.__class__ is BadRecord:
            dead.write(source=item.source, line_no=item.line_no, raw=item.raw, kind=item.kind, reason=item.reason)  # type: ignore[union-attr]
            continue
        event = item.event  # type: ignore[union-attr]
        try:
            decision = label(event)
            fields: dict[str, Any] = {labels_field: decision.labels}
            if explain:
                fields["label_meta"] = decision.explain()
            if recorder is not None:
                recorder(event, decision)
            write(splice_fields(item.raw, event, fields))
        except Exception as exc:  # never lose a record to an unexpected failure
            reason = str(exc) if isinstance(exc, ActiveLabelError) else f"{type(exc).__name__}: {exc}"
            dead.write(source=item.source, line_no=item.line_no, raw=item.raw, kind="label_failed", reason=reason)
            continue
        summary.labeled += 1
        if bar is not None and not summary.records_in & 2047:
            bar.update(task, completed=source.bytes_read)


#: Records labeled column-wise at once in file mode (the columnar path's sweet spot).
COLUMNAR_CHUNK = 4096


def _label_plain(labeler: Any, source: JsonlSource, sink: JsonlSink, dead: DeadLetterSink, summary: RunSummary,
                 labels_field: str, limits: ReadLimits, bar: Any, task: Any) -> None:
    """The file-mode hot loop: decode, label, splice the labels into the original bytes.

    Same outcome as the general loop, with the per-record work inlined: no record
    objects, no Decision, the labels appended before the closing brace. When the
    policy has a columnar form (engine/batch.py), records are labeled
    ``COLUMNAR_CHUNK`` at a time column-wise; output order is input order.
    """
    loads = orjson.loads
    dumps = orjson.dumps
    decode_error = orjson.JSONDecodeError
    label_event = labeler._fn
    write = sink.write_raw
    bad = dead.write
    max_bytes, max_depth = limits.max_line_bytes, limits.max_depth
    if max_depth >= PARSER_MAX_DEPTH:
        max_depth = 1 << 62  # the parser enforces it: skip the bracket count
    prefix = b',' + dumps(labels_field) + b':'
    labeled = records = 0
    columnar = labeler.columnar_plan()
    chunk_raws: list[bytes] = []
    chunk_events: list[dict[str, Any]] = []
    chunk_where: list[tuple[str, int]] = []

    def flush() -> int:
        """Label the pending records column-wise; their lines keep input order."""
        try:
            result, lines = columnar.run_lines(chunk_raws, chunk_events, label_event, labels_field)
        except Exception:  # a fault in the batch path must not lose the chunk: label it per event
            n = 0
            for (name, line_no), raw, event in zip(chunk_where, chunk_raws, chunk_events):
                try:
                    sink.write_raw(splice_fields(raw, event, {labels_field: label_event(event)[0]}))
                    n += 1
                except Exception as exc:
                    bad(source=name, line_no=line_no, raw=raw, kind="label_failed", reason=f"{type(exc).__name__}: {exc}")
            lines = None
        else:
            hits, errors = labeler._hits, labeler._errors
            for idx, c in result.hits.items():
                hits[idx] += c
            for idx, c in result.errors.items():
                errors[idx] += c
            sink.write_lines(lines)
            n = len(lines)
        chunk_raws.clear()
        chunk_events.clear()
        chunk_where.clear()
        return n

    for name, first_line, block in source.iter_blocks():
        line_no = first_line - 1
        for raw in block:
            line_no += 1
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            if not raw or raw.isspace():
                continue
            records += 1
            if len(raw) > max_bytes or (max_depth < PARSER_MAX_DEPTH and raw.count(b"{") + raw.count(b"[") > max_depth):
                decoded = decode_line(raw, limits)  # the slow, complete check: too large, too deep
                if decoded.__class__ is not dict:
                    bad(source=name, line_no=line_no, raw=raw, kind=decoded[0], reason=decoded[1])  # type: ignore[index]
                    continue
                event = decoded
            else:
                try:
                    event = loads(raw)
                except decode_error:
                    kind, reason = decode_line(raw, limits)  # type: ignore[misc]
                    bad(source=name, line_no=line_no, raw=raw, kind=kind, reason=reason)
                    continue
                if event.__class__ is not dict:
                    kind, reason = decode_line(raw, limits)  # type: ignore[misc]
                    bad(source=name, line_no=line_no, raw=raw, kind=kind, reason=reason)
                    continue
            if columnar is not None:
                chunk_raws.append(raw)
                chunk_events.append(event)  # type: ignore[arg-type]
                chunk_where.append((name, line_no))
                if len(chunk_events) >= COLUMNAR_CHUNK:
                    labeled += flush()
                continue
            try:
                labels = label_event(event)[0]
            except Exception as exc:  # never lose a record to an unexpected failure
                bad(source=name, line_no=line_no, raw=raw, kind="label_failed", reason=f"{type(exc).__name__}: {exc}")
                continue
            if raw[-1:] == b"}" and raw[-2:-1] not in (b"{", b" ", b"\t") and labels_field not in event:
                write(raw[:-1] + prefix + dumps(labels) + b"}")
            else:
                write(splice_fields(raw, event, {labels_field: labels}))
            labeled += 1
        if bar is not None:
            bar.update(task, completed=source.bytes_read)
    if chunk_events:
        labeled += flush()
    labeler._events += labeled
    summary.records_in = records
    summary.labeled = labeled


def print_summary(labeler: Any, summary: RunSummary, dead: DeadLetterSink, output: str | None, dlq: str | None) -> None:
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
    errors = {k: v for k, v in stats.rule_errors.items() if v}
    if errors:
        err.print("rule errors: the rule did not match because a field was missing or of another type", highlight=False)
        et = Table()
        et.add_column("rule")
        et.add_column("errors", justify="right")
        for rule, count in sorted(errors.items(), key=lambda kv: -kv[1]):
            et.add_row(rule, f"{count:,}")
        err.print(et)


def _top_values(labeler: Any) -> dict[str, str]:
    """Per label, the rules/defaults that set it most (value names only for non-sensitive labels)."""
    plan = labeler._plan
    hits = labeler._hits
    per_label: dict[str, dict[str, int]] = {}
    for idx, (src, _conf) in enumerate(plan.source_table):
        label = plan.source_label[idx]
        if label is None or not hits[idx]:
            continue
        per_label.setdefault(label, {})[src] = hits[idx]
    out_: dict[str, str] = {}
    for name, counts in per_label.items():
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
        short = lambda items: ", ".join(i.removeprefix("rule:") for i in items)
        table.add_row(name, value, conf, entry["source"] or "", short(entry["matched"]), short(entry["lost"]), errors)
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
