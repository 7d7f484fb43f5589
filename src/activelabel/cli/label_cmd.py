"""`activelabel label`, `explain` and `demo`: label JSONL records with a policy."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from activelabel.cli._common import err, fail, open_labeler, out, print_records, writable_output
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError, SourceError
from activelabel.sinks import DeadLetterSink, JsonlSink, default_dlq_path
from activelabel.sources import JsonlSource, ReadLimits
from activelabel.sources.jsonl import DEFAULT_MAX_DEPTH, DEFAULT_MAX_LINE_BYTES

if TYPE_CHECKING:
    from activelabel.engine import Labeler, LabelerStats
    from activelabel.engine.record_loop import Block

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


class RunSummary:
    """Counts of one labeling run; ``records_in == labeled + dead_lettered`` always.

    ``stats`` and ``hits_by_source`` are the labeler's counters for the run (merged from
    every worker when it ran on several cores).
    """

    def __init__(self) -> None:
        self.records_in = 0
        self.labeled = 0
        self.dead_lettered = 0
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.stats: LabelerStats | None = None
        self.hits_by_source: dict[str, dict[str, int]] = {}
        self.workers = 1
        self.one_process_because: str | None = None  # why --workers was not used, when it was asked for
        self.read_error: str | None = None  # an input that could not be read to its end (a truncated .gz)


def _regular_files(inputs: list[str]) -> bool:
    return all(p != "-" and not p.endswith(".gz") and Path(p).is_file() for p in inputs)


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
    guard: Any = None,
    workers: int = 1,
    observer: Any = None,
) -> tuple[RunSummary, DeadLetterSink]:
    """Label every record of ``inputs`` into ``output``; bad lines go to ``dlq`` (created on the first one).

    ``workers`` > 1 labels large regular files on that many cores (engine/parallel.py),
    in input order with the same output and counts; stdin, .gz inputs, small inputs,
    ``recorder`` and policies that need input order (``parallel_refusal``) use one process.
    After each block the output is pushed through to the OS, so a reader on a pipe sees
    each record as soon as its input line has been read.
    """
    from activelabel.engine.parallel import (
        MIN_PARALLEL_BYTES,
        WorkerSettings,
        deferred_guards,
        fork_refusal,
        parallel_refusal,
        run_parallel,
    )
    from activelabel.engine.record_loop import CodesObserver, JsonlFileOutput, RecordLoop, jsonl_blocks

    source = JsonlSource(inputs, limits)
    summary = RunSummary()
    total_bytes = sum(Path(p).stat().st_size for p in inputs if p != "-" and Path(p).is_file() and not p.endswith(".gz"))
    parallel = False
    if workers > 1:
        refusal = parallel_refusal(labeler)
        if recorder is not None:
            refusal = "--record writes decisions from one process"
        elif guard is not None and not guard.passthrough:
            refusal = "labels above the output's clearance are protected (and counted) in one process"
        elif explain and deferred_guards(labeler):
            refusal = "--explain with a cardinality guard explains each value before the guard: one process"
        elif observer is not None and (explain or not isinstance(observer, CodesObserver) or observer.needs_values):
            # The audit log at Metadata needs only each record's source codes, which workers send back.
            refusal = "--shadow, and --audit above level Metadata or with --explain, observe every decision in one process"
        elif not _regular_files(inputs):
            refusal = "stdin and .gz inputs are read as a stream"
        elif total_bytes < MIN_PARALLEL_BYTES:
            refusal = f"the input is under {MIN_PARALLEL_BYTES >> 20} MiB"
        elif refusal is None:
            refusal = fork_refusal()
        summary.one_process_because = refusal
        parallel = refusal is None
    sink = JsonlSink(output)
    dead = DeadLetterSink(dlq)
    bar = task = None
    if progress and total_bytes:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        # Refreshed after each block, not by a thread: worker processes are forked from this one.
        bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                       console=err, transient=True, auto_refresh=False)
        task = bar.add_task("labeling", total=total_bytes)
        bar.start()

    done = [0]

    def block_done(nbytes: int | None = None) -> None:
        # The block is written: push it (and its dead letters) out before the next read may block.
        sink.push()
        dead.push()
        if bar is not None and task is not None:
            done[0] += nbytes or 0
            bar.update(task, completed=source.bytes_read if nbytes is None else done[0], refresh=True)

    def blocks() -> Iterator[Block]:
        it = iter(jsonl_blocks(source))
        while True:
            try:
                block = next(it)
            except StopIteration:
                return
            except SourceError as exc:
                # A cut input (a truncated .gz): end the run here, so what was read is written and counted.
                summary.read_error = str(exc)
                return
            yield block
            block_done()  # the loop finishes each block before it asks for the next

    try:
        if parallel:
            codes_observer = observer if isinstance(observer, CodesObserver) else None
            settings = WorkerSettings(limits, labels_field, explain, codes=codes_observer is not None,
                                      guarded=tuple(deferred_guards(labeler)))
            run = run_parallel(labeler, settings, [(p, p) for p in inputs], sink, dead, workers=workers, on_block=block_done,
                               observer=codes_observer)
            counts = run.counts
            summary.stats, summary.hits_by_source, summary.workers = run.stats, run.hits_by_source, run.workers
        else:
            loop = RecordLoop(labeler, limits=limits, labels_field=labels_field, explain=explain, on_decision=recorder,
                              guard=guard,  # privacy: the output's OutputGuard (None: nothing to protect)
                              observer=observer)  # shadow / audit (None: nobody watches)
            counts = loop.run(blocks(), JsonlFileOutput(sink, dead))
    finally:
        if bar is not None:
            bar.stop()
        sink.close()
        dead.close()
    if summary.stats is None:
        summary.stats, summary.hits_by_source = labeler.stats(), labeler.hits_by_source()
    summary.records_in = counts.records_in
    summary.labeled = counts.labeled
    summary.dead_lettered = dead.count
    summary.elapsed = time.perf_counter() - summary.started
    return summary, dead


def output_guards(labeler: Labeler, clearance: str | None, key_file: Path | None, *, door: str) -> tuple[Any, Any]:
    """The guard of a command's labeled output (``clearance`` None: the policy's) and of its decision store.

    Exits 2 before anything is read when the clearance is unknown or a named key is
    missing or unusable: nothing is ever written in clear instead.
    """
    from activelabel.errors import PseudonymKeyError
    from activelabel.governance import OutputGuard, Protector

    try:
        protector = Protector.configured(key_file)
        guard = OutputGuard.of(labeler.policy, door=door, protector=protector, clearance=clearance)
        store_guard = OutputGuard.of(labeler.policy, door="store", protector=protector)
    except PseudonymKeyError as exc:
        fail(str(exc), 2)
    except ValueError as exc:
        fail(f"--clearance: {exc}", 2)
    return guard, store_guard


def print_summary(labeler: Labeler, summary: RunSummary, dead: DeadLetterSink, output: str | None, dlq: str | None) -> None:
    """The end-of-run report on stderr: counts that add up, coverage, rule errors."""
    stats = summary.stats or labeler.stats()
    rate = summary.records_in / summary.elapsed if summary.elapsed > 0 else 0.0
    ok = summary.records_in == summary.labeled + summary.dead_lettered
    cores = f", {summary.workers} workers" if summary.workers > 1 else ""
    err.print(
        f"[bold]{summary.records_in}[/] records in = [green]{summary.labeled}[/] labeled + "
        f"[{'red' if summary.dead_lettered else 'green'}]{summary.dead_lettered}[/] dead-lettered"
        f"{'' if ok else '  [bold red](MISMATCH)[/]'}   "
        f"{summary.elapsed:.2f}s, {rate:,.0f} records/s{cores}   policy {labeler.policy.metadata.name or ''} {labeler.version[:19]}",
        highlight=False,
    )
    if summary.one_process_because:
        err.print(f"one process: {summary.one_process_because}", highlight=False, markup=False)
    if output:
        err.print(f"labeled output: {output}", highlight=False, markup=False)
    if summary.dead_lettered:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(dead.by_kind.items()))
        err.print(f"dead letters ({kinds}): {dlq or '(not written: pass --dlq FILE)'}", highlight=False, markup=False)
    table = Table(title="labels", title_justify="left")
    table.add_column("label")
    table.add_column("set", justify="right")
    table.add_column("coverage", justify="right")
    table.add_column("set by (events)")
    # Conflicts (matching rules that disagreed; first_match counts them with --conflicts) and
    # overflow (values replaced by the cardinality guard) get columns once any label has one.
    extra = any(stats.conflicts.values()) or any(stats.overflow.values())
    if extra:
        table.add_column("conflicts", justify="right")
        table.add_column("overflow", justify="right")
    n = max(summary.labeled, 1)
    values = _top_values(summary.hits_by_source or labeler.hits_by_source())
    for name, count in stats.label_set.items():
        row = [name, f"{count:,}", f"{count / n:.1%}", values.get(name, "")]
        if extra:
            row += [f"{stats.conflicts.get(name, 0):,}", f"{stats.overflow.get(name, 0):,}"]
        table.add_row(*row)
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
    for name, m in stats.models.items():  # what the policy's models did: abstentions are not silent
        breaker = (m.get("breaker") or {}).get("state", "closed")
        err.print(
            f"model {name}: {m.get('rows', 0):,} rows, {m.get('predictions', 0):,} predictions, abstained "
            f"{m.get('abstained_low_confidence', 0):,} below min_confidence + {m.get('abstained_breaker_open', 0):,} "
            + (f"breaker open ({m['nearest_template']:,} more below min_confidence labeled by their trained template), "
               if m.get("nearest_template") else "breaker open, ") +
            f"{m.get('timeouts', 0):,} timeouts, {m.get('errors', 0):,} errors "
            f"({m.get('fallbacks', 0):,} fallbacks), breaker {breaker}",
            highlight=False, markup=False, soft_wrap=True,
        )


def check_outcome(summary: RunSummary, dead: DeadLetterSink, dlq: str | None, max_dlq_ratio: float | None) -> None:
    """Exit non-zero when nothing could be labeled, or more than ``max_dlq_ratio`` of the records were dead-lettered."""
    if not summary.records_in:
        return
    where = f"; the dead letters in {dlq} say why, line by line" if dlq and dead.written else ""
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(dead.by_kind.items()))
    if not summary.labeled:
        fail(f"none of the {summary.records_in:,} records could be labeled ({kinds}). The input must be JSON Lines: "
             f"one JSON object per line (convert CSV or plain log lines first){where}")
    ratio = summary.dead_lettered / summary.records_in
    if max_dlq_ratio is not None and ratio > max_dlq_ratio:
        fail(f"{summary.dead_lettered:,} of {summary.records_in:,} records ({ratio:.1%}) were dead-lettered ({kinds}), "
             f"over --max-dlq-ratio {max_dlq_ratio:g}{where}")


def _short(items: list[str]) -> str:
    return ", ".join(i.removeprefix("rule:") for i in items)


def _top_values(hits_by_source: dict[str, dict[str, int]]) -> dict[str, str]:
    """Per label, the rules/defaults that set it most (value names only for non-sensitive labels)."""
    out_: dict[str, str] = {}
    for name, counts in hits_by_source.items():
        if counts:
            best = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
            out_[name] = ", ".join(f"{src} ({count:,})" for src, count in best)
    return out_


@app.command()
def label(
    inputs: Annotated[list[str] | None, typer.Argument(help="JSONL inputs (files, .gz, or - for stdin). Default: stdin.")] = None,
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file.")] = Path("policy.yaml"),
    output: Annotated[str | None, typer.Option("--output", "-o", help="Labeled JSONL output (default: stdout).")] = None,
    dlq: Annotated[str | None, typer.Option("--dlq", help="Dead-letter JSONL for lines that cannot be labeled, created only if there are any (default: OUTPUT.dlq.jsonl next to a regular output file, else ./activelabel.dlq.jsonl: for stdout, /dev/null or a pipe).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add a label_meta object saying how each label was decided.")] = False,
    labels_field: Annotated[str, typer.Option("--labels-field", help="Name of the field the labels are written to.")] = "labels",
    max_line_bytes: Annotated[int, typer.Option("--max-line-bytes", help="Longer lines go to the DLQ.")] = DEFAULT_MAX_LINE_BYTES,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Deeper-nested objects go to the DLQ (1024 is checked by the parser for free; a lower limit costs a scan).")] = DEFAULT_MAX_DEPTH,
    record: Annotated[Path | None, typer.Option("--record", help="Record each decision in this SQLite store (for feedback and reports).")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="Field holding a stable record id for --record (default: content hash).")] = None,
    record_sample: Annotated[float, typer.Option("--record-sample", help="Share of decisions to record with --record (by record id, deterministic).")] = 1.0,
    track_conflicts: Annotated[bool, typer.Option("--conflicts", help="Evaluate every rule to count conflicts between rules.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Processes labeling a large file in parallel, output in input order (default: the CPUs available, one less with --audit from 3 CPUs on; 1: one process).", min=1)] = None,
    max_dlq_ratio: Annotated[float | None, typer.Option("--max-dlq-ratio", help="Exit 1 if more than this share of the records (0-1) was dead-lettered. A run that labels nothing always exits 1.", min=0.0, max=1.0)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
    clearance: Annotated[str | None, typer.Option("--clearance", help="Highest sensitivity the output's readers may see in clear: public, internal, pii or secret (default: the policy's outputs.clearance, else internal). Labels above it get their protect: treatment.")] = None,
    pseudonym_key_file: Annotated[Path | None, typer.Option("--pseudonym-key-file", help="File of `<key id>=<secret>` lines for pseudonyms (default: $ACTIVELABEL_PSEUDONYM_KEY; with neither, pseudonymize masks).")] = None,
    shadow: Annotated[Path | None, typer.Option("--shadow", help="A candidate policy evaluated beside the served one on every record; the output is unchanged.")] = None,
    shadow_report: Annotated[Path | None, typer.Option("--shadow-report", help="Write the shadow comparison as JSON here (read it with `activelabel rollout report --from`).")] = None,
    audit: Annotated[Path | None, typer.Option("--audit", help="Write every decision to a tamper-evident audit log in this directory (see docs/audit.md).")] = None,
    audit_key: Annotated[Path | None, typer.Option("--audit-key", help="Ed25519 signing key (PEM) for --audit (default: generated into DIR/keys/).")] = None,
    audit_level: Annotated[str | None, typer.Option("--audit-level", help="None | Metadata | Request | Full for every decision (default Metadata).")] = None,
    audit_policy: Annotated[Path | None, typer.Option("--audit-policy", help="Audit level policy YAML (rules by door, label, sensitivity).")] = None,
) -> None:
    """Label JSONL records with a policy: each object gets a `labels` object; bad lines go to the DLQ."""
    inputs = inputs or ["-"]
    for path in inputs:
        if path != "-" and not Path(path).exists():
            fail(f"input {path} does not exist")
    if shadow_report is not None and shadow is None:
        fail("--shadow-report needs --shadow CANDIDATE (the policy to compare with)", 2)
    if shadow_report is not None:
        writable_output(shadow_report, "--shadow-report")  # written after the run: known to be writable before it
    if dlq is None:
        dlq = default_dlq_path(output)
    asked_workers = workers is not None
    if workers is None:
        from activelabel.engine.parallel import default_workers

        workers = default_workers()
        if audit is not None and workers > 2:
            # The audit log's writer process chains and hashes every record, about a fifth of
            # what labeling costs: from three CPUs on, leave it one. On two, one labeling
            # process and the writer leave most of a core idle (measured: bench/rollout_overhead.py).
            workers -= 1
    labeler = open_labeler(policy, track_conflicts=track_conflicts)
    guard, store_guard = output_guards(labeler, clearance, pseudonym_key_file, door="label-file")
    recorder = None
    store = None
    if record is not None:
        from activelabel.quality.store import DecisionStore, record_id_for

        if not 0.0 < record_sample <= 1.0:
            fail(f"--record-sample must be above 0 and at most 1, not {record_sample}", 2)
        store = DecisionStore(record, policy=labeler.policy, sample_rate=record_sample, guard=store_guard)
        if id_field is None and not quiet:
            # Feedback names a record by its id: say how to know it before any decision is stored.
            err.print(f"note: decisions in {record} are keyed by a content hash of each record (sha256:…, "
                      "not in the output); pass --id-field FIELD to key them by a field of your records, so "
                      "feedback can name them; `activelabel review export` lists recorded ids",
                      highlight=False, markup=False)

        def recorder(event: dict[str, Any], decision: Any) -> None:
            store.record(record_id_for(event, id_field), event, decision)

    shadow_run, audit_log, observer = _observers(labeler, shadow, audit, audit_key, audit_level, audit_policy)
    try:
        summary, dead = run_label(
            labeler, inputs, output, dlq, explain=explain, labels_field=labels_field,
            limits=ReadLimits(max_line_bytes, max_depth), recorder=recorder, progress=sys.stderr.isatty() and not quiet,
            guard=guard,
            workers=workers,
            observer=observer,
        )
    except ActiveLabelError as exc:
        fail(str(exc))
    finally:
        if store is not None and hasattr(store, "close"):
            store.close()
        if audit_log is not None:
            try:
                audit_log.close()  # returns once every record and the last checkpoint are on disk
            except ActiveLabelError as exc:
                fail(str(exc))
    if shadow_run is not None:
        _shadow_summary(shadow_run, shadow_report, quiet)
    if not asked_workers:
        summary.one_process_because = None  # the default asks for no more than what fits: no note
    if not quiet:
        print_summary(labeler, summary, dead, output, dlq)
    if summary.read_error:
        fail(summary.read_error)
    check_outcome(summary, dead, dlq, max_dlq_ratio)


def _observers(labeler: Labeler, shadow: Path | None, audit: Path | None, audit_key: Path | None,
               audit_level: str | None, audit_policy: Path | None) -> tuple[Any, Any, Any]:
    """The shadow run and the audit log of `label`, and the one record-loop observer calling both."""
    from activelabel.cli._common import audit_options, open_candidate
    from activelabel.governance.observers import AuditObserver, ShadowRun, chain, cli_record_id, cli_record_ids

    shadow_run = audit_log = None
    if shadow is not None:
        shadow_run = ShadowRun(labeler, open_candidate(shadow, "shadow candidate"), record_id_of=cli_record_id)
    if audit is not None:
        audit_log = audit_options(audit, audit_key, audit_level, audit_policy)(labeler.policy)
        # Chaining and hashing each record is sequential work: a child process does it on another core.
        audit_log.start_writer_process()
    audit_observer = None if audit_log is None else AuditObserver(audit_log, door="cli", policy=labeler.policy,
                                                                   record_id_of=cli_record_id, record_ids_of=cli_record_ids)
    return shadow_run, audit_log, chain(shadow_run, audit_observer)


def _shadow_summary(shadow_run: Any, report_file: Path | None, quiet: bool) -> None:
    report = shadow_run.report()
    if report_file is not None:
        try:
            report_file.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:  # checked before the run; this is what changed since (a full disk, a removed folder)
            fail(f"cannot write --shadow-report {report_file}: {exc.strerror or exc}")
    if quiet:
        return
    changed = ", ".join(f"{name} {lab['changed']}" for name, lab in report["labels"].items() if lab["changed"])
    err.print(f"shadow {shadow_run.candidate.version[:19]}: {report['events']} records compared, "
              f"{report['events_changed']} changed ({changed or 'no label changed'})"
              + (f"; report: {report_file}" if report_file else "; pass --shadow-report FILE.json for the detail"),
              highlight=False, markup=False)


@app.command()
def explain(
    event: Annotated[str, typer.Argument(help="The event: a JSON object, or - to read it from stdin.")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file.")] = Path("policy.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
    show_sensitive: Annotated[bool, typer.Option("--show-sensitive", help="Show values of pii/secret labels in clear (the same as --clearance secret: for the event's own owner).")] = False,
    clearance: Annotated[str | None, typer.Option("--clearance", help="Highest sensitivity shown in clear (default: the policy's outputs.clearance, else internal); labels above it are shown as their protect: treatment.")] = None,
    pseudonym_key_file: Annotated[Path | None, typer.Option("--pseudonym-key-file", help="Pseudonym keys (default: $ACTIVELABEL_PSEUDONYM_KEY).")] = None,
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
    guard, _ = output_guards(labeler, "secret" if show_sensitive else clearance, pseudonym_key_file, door="explain")
    decision = labeler.label(obj)
    info = guard.explain(decision.explain())  # the one privacy step: labels above the clearance, treated or left out
    if as_json:
        out.print_json(orjson.dumps(info).decode())
        return
    specs = labeler.policy.labels
    rows: list[list[str]] = []
    for name, entry in info["labels"].items():
        if not entry["set"]:
            value = "[dim]unset[/]"
        else:
            value = escape(orjson.dumps(entry["value"]).decode())
            if name in guard.hidden:
                value += f" [dim]‹{specs[name].sensitivity}›[/]"
        conf = f"{entry['confidence']:.2f}" if entry["confidence"] is not None else ""
        errors = "; ".join(f"{e['source']}: {e['error']}" for e in entry["errors"])
        rows.append([escape(name), value, conf, escape(entry["source"] or ""), escape(_short(entry["matched"])),
                     escape(_short(entry["lost"])), escape(errors)])
    title = escape(f"{info['policy']} {info['policy_version'][:19]}  ({info['elapsed_us']} µs)")
    # A table on a terminal wide enough, else one block per label; whole unpadded lines in a pipe (cli/_common.py).
    print_records(out, title, ("label", "value", "conf.", "source", "matched rules", "lost", "errors"), rows)
    withheld = sorted(n for n in guard.hidden if n in decision.labels and n not in info["labels"])
    if withheld:
        out.print(f"[dim]withheld: {', '.join(withheld)} (above clearance {guard.clearance}; pass --clearance to see them)[/]")


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
    guard, _ = output_guards(labeler, None, None, door="label-file")  # the demo's file is an output like any other
    summary, dead = run_label(labeler, [str(events)], str(output), dlq, progress=sys.stderr.isatty(), guard=guard)
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
    visible = [name for name, spec in specs.items() if spec.sensitivity not in ("pii", "secret")]
    rows = []
    for rec in shown.values():
        labels = rec["labels"]
        cells = [escape(orjson.dumps(labels[n]).decode().strip('"')) if n in labels else "[dim]-[/]" for n in visible]
        rows.append([escape(str(rec.get(k))) for k in ("status", "path", "user_agent")] + cells)
    # A table on a terminal wide enough, else one block per record; whole unpadded lines in a pipe (cli/_common.py).
    print_records(out, escape(f"{len(shown)} labeled records of {events.name}, one per distinct outcome"),
                  ["status", "path", "user agent", *visible], rows)
    hidden = [name for name in specs if name not in visible]
    if hidden:
        out.print(f"[dim]not shown: {', '.join(hidden)} (sensitivity pii/secret)[/]")
    print_summary(labeler, summary, dead, str(output), dlq)
