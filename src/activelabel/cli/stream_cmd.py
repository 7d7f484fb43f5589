"""`activelabel stream`: a Kafka stream worker, topic in → labeled topic out, bad messages to a DLQ topic."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from activelabel.cli._common import err, fail, open_labeler, print_policy_error
from activelabel.cli.main import app
from activelabel.errors import ActiveLabelError, PolicyError, RolloutError, StreamConfigError
from activelabel.sources.jsonl import DEFAULT_MAX_DEPTH, DEFAULT_MAX_LINE_BYTES


def _build_config(**fields: Any) -> Any:
    from activelabel.stream import StreamConfig

    try:
        return StreamConfig(**{k: v for k, v in fields.items() if v is not None})
    except StreamConfigError as exc:
        fail(str(exc), 2)


def _configure_logging(verbose: bool) -> None:
    # librdkafka's own log lines come through this logger too, instead of raw stderr.
    log = logging.getLogger("activelabel.stream")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    log.propagate = False


def print_stream_summary(stats: dict[str, Any], labeler: Any, dlq_topic: str) -> None:
    """The end-of-run report on stderr: counts that add up, rate, why it stopped."""
    ok = stats["messages_in"] == stats["labeled"] + stats["dead_lettered"]
    err.print(
        f"[bold]{stats['messages_in']}[/] messages in = [green]{stats['labeled']}[/] labeled + "
        f"[{'red' if stats['dead_lettered'] else 'green'}]{stats['dead_lettered']}[/] dead-lettered"
        f"{'' if ok else '  [bold red](MISMATCH)[/]'}   "
        f"{stats['elapsed_s']:.2f}s ({stats['active_s']:.2f}s active, {stats['messages_per_s']:,.0f} messages/s)   "
        f"policy {labeler.policy.metadata.name or ''} {labeler.version[:19]}",
        highlight=False,
    )
    if stats["dead_lettered"]:
        kinds = ", ".join(f"{k}: {v}" for k, v in stats["dead_letter_kinds"].items())
        err.print(f"dead letters ({kinds}) in topic {dlq_topic}", highlight=False)
    if stats["stopped_because"]:
        err.print(f"stopped: {stats['stopped_because']}", highlight=False)


@app.command()
def stream(
    input_topic: Annotated[str, typer.Option("--input-topic", help="Topic of JSON objects to label.")],
    output_topic: Annotated[str, typer.Option("--output-topic", help="Topic the labeled messages go to.")],
    policy: Annotated[Path, typer.Option("--policy", "-p", help="Policy YAML file.")] = Path("policy.yaml"),
    bootstrap: Annotated[str, typer.Option("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT…].")] = "127.0.0.1:9092",
    dlq_topic: Annotated[str | None, typer.Option("--dlq-topic", help="Dead-letter topic (default: OUTPUT_TOPIC.dlq).")] = None,
    group: Annotated[str, typer.Option("--group", help="Consumer group; workers sharing it split the partitions.")] = "activelabel",
    labels_field: Annotated[str, typer.Option("--labels-field", help="Name of the field the labels are written to.")] = "labels",
    explain: Annotated[bool, typer.Option("--explain", help="Add a label_meta object saying how each label was decided.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Messages per batch; offsets are committed per batch, after delivery.")] = 500,
    poll_timeout: Annotated[float, typer.Option("--poll-timeout", help="Seconds one poll waits for messages.")] = 1.0,
    max_messages: Annotated[int | None, typer.Option("--max-messages", help="Stop after this many input messages.")] = None,
    idle_timeout: Annotated[float | None, typer.Option("--idle-timeout", help="Stop after this many seconds without a message (counted from partition assignment).")] = None,
    offset_reset: Annotated[str, typer.Option("--offset-reset", help="Where a new group starts: earliest or latest.")] = "earliest",
    session_timeout_ms: Annotated[int, typer.Option("--session-timeout-ms", help="Consumer group session timeout in ms.")] = 45_000,
    max_value_bytes: Annotated[int, typer.Option("--max-value-bytes", help="Larger message values go to the DLQ.")] = DEFAULT_MAX_LINE_BYTES,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Deeper-nested values go to the DLQ.")] = DEFAULT_MAX_DEPTH,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final stats as one JSON object on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log group membership and Kafka client messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
    clearance: Annotated[str | None, typer.Option("--clearance", help="Highest sensitivity the output topic's readers may see in clear (default: the policy's outputs.clearance, else internal).")] = None,
    pseudonym_key_file: Annotated[Path | None, typer.Option("--pseudonym-key-file", help="File of `<key id>=<secret>` lines for pseudonyms (default: $ACTIVELABEL_PSEUDONYM_KEY).")] = None,
    key_label: Annotated[str | None, typer.Option("--key-label", help="Key labeled messages by this label's value (default: the input key); refused for a pii or secret label.")] = None,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Ops port: /metrics /healthz /readyz /ui /v1/tap (0 = off).", min=0, max=65535)] = 0,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="Address the ops port listens on.")] = "0.0.0.0",
    watch: Annotated[bool, typer.Option("--watch", help="Reload the policy when its file or a file it depends on changes (SIGHUP always reloads).")] = False,
    rollout_spec: Annotated[Path | None, typer.Option("--rollout", help="Roll out --candidate by this spec YAML (the same as `rollout start --spec`).")] = None,
    candidate: Annotated[Path | None, typer.Option("--candidate", help="The candidate policy of --rollout (it must pass validation and its own tests).")] = None,
    rollout_state: Annotated[Path | None, typer.Option("--rollout-state", help="Where the rollout's state persists (default: SPEC.state.json); a restart resumes it.")] = None,
    audit: Annotated[Path | None, typer.Option("--audit", help="Write every decision and rollout action to a tamper-evident audit log in this directory.")] = None,
    audit_key: Annotated[Path | None, typer.Option("--audit-key", help="Ed25519 signing key (PEM) for --audit (default: generated into DIR/keys/).")] = None,
    audit_level: Annotated[str | None, typer.Option("--audit-level", help="None | Metadata | Request | Full for every decision (default Metadata).")] = None,
    audit_policy: Annotated[Path | None, typer.Option("--audit-policy", help="Audit level policy YAML (rules by door, label, sensitivity).")] = None,
) -> None:
    """Label a Kafka topic into another: consumer group in, labeled topic out, bad messages to a DLQ topic.

    Stops on SIGINT/SIGTERM (after delivering and committing the current batch),
    or by itself with --max-messages / --idle-timeout. SIGHUP (and --watch) reloads
    the policy; a refused policy is logged and the serving one keeps labeling.
    """
    config = _build_config(
        bootstrap_servers=bootstrap, input_topic=input_topic, output_topic=output_topic, dlq_topic=dlq_topic,
        group_id=group, labels_field=labels_field, explain=explain, batch_size=batch_size, poll_timeout_s=poll_timeout,
        max_messages=max_messages, idle_timeout_s=idle_timeout, auto_offset_reset=offset_reset,
        session_timeout_ms=session_timeout_ms, max_value_bytes=max_value_bytes, max_depth=max_depth,
        clearance=clearance, key_label=key_label,
    )
    _configure_logging(verbose)
    from activelabel.cli.label_cmd import output_guards
    from activelabel.stream import StreamWorker

    open_audit = None
    if audit is not None:
        from activelabel.cli._common import audit_options

        open_audit = audit_options(audit, audit_key, audit_level, audit_policy)  # a bad DIR stops here: nothing started
    ops, server, restore = _start_ops(config, policy, metrics_port, metrics_host, watch, quiet)
    labeler = ops.runtime.current.labeler if ops is not None else open_labeler(policy)
    guard, _ = output_guards(labeler, clearance, pseudonym_key_file, door="kafka")
    if (rollout_spec is None) != (candidate is None):
        fail("--rollout SPEC.yaml and --candidate POLICY go together", 2)
    audit_log = rollout = checked = None
    if rollout_spec is not None and candidate is not None:
        checked = _checked_rollout(labeler, rollout_spec, candidate)  # before the audit log records a start
    if open_audit is not None:
        audit_log = open_audit(labeler.policy)
    if rollout_spec is not None and checked is not None:
        rollout = _open_rollout(labeler, rollout_spec, checked, rollout_state, audit_log)
    try:
        worker = StreamWorker(labeler, config, guard=guard, ops=ops, rollout=rollout, audit=audit_log)
    except StreamConfigError as exc:
        fail(str(exc), 2)
    if not quiet:
        err.print(f"labeling {config.input_topic} → {config.output_topic} (dead letters → {config.dead_letter_topic}) "
                  f"as group {config.group_id} on {config.bootstrap_servers}", highlight=False)
    try:
        stats = worker.run()
    except ActiveLabelError as exc:
        partial = worker.stats()
        if not quiet and partial["messages_in"]:
            print_stream_summary(partial, labeler, config.dead_letter_topic)  # what was committed before the failure
        fail(str(exc))
    finally:
        if server is not None:
            server.close()
        if ops is not None:
            ops.close()
        if restore is not None:
            restore()
    if ops is not None:
        labeler = ops.runtime.current.labeler  # the summary names the policy serving at the end
        if audit_log is not None:
            audit_log.close()
    if rollout is not None:
        stats["rollout"] = rollout.status()
        if not quiet:
            st = stats["rollout"]
            err.print(f"rollout {st['id']}: {st['state']} at step {st['step']:g}%"
                      + (f"; {st['reason']}" if st["reason"] else ""), highlight=False, markup=False)
    if not quiet:
        print_stream_summary(stats, labeler, config.dead_letter_topic)
    if as_json:
        typer.echo(orjson.dumps(stats).decode())


def _start_ops(config: Any, policy: Path, port: int, host: str, watch: bool, quiet: bool) -> tuple[Any, Any, Any]:
    """The worker's reloadable policy, ops port and reload triggers: (ops, server, restore SIGHUP)."""
    try:
        from activelabel.stream.ops_server import StreamOps
    except ImportError:
        if port or watch:
            raise  # main() names the missing extra
        return None, None, None  # without the [service] extra: a fixed policy, no reload
    if not policy.exists():
        fail(f"policy file {policy} does not exist (pass --policy PATH to a policy YAML)")
    # Without the ops port nobody reads drift, the status page or a tap: skip what only they need.
    ops = StreamOps(config, policy, observe_labels=bool(port), sample_interval_s=2.0 if port else math.inf)
    server = None
    if port:
        try:
            server = ops.serve(port, host)  # up before the policy loads: /readyz says what it waits for
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} for the ops port: {exc.strerror or exc}; pick another --metrics-port")
        if not quiet:
            err.print(f"ops port on http://{host}:{server.port}: /metrics /healthz /readyz /ui /v1/tap", highlight=False)
    try:
        ops.load()
    except PolicyError as exc:
        if server is not None:
            server.close()
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    restore = ops.install_sighup()
    if watch:
        ops.start_watch()
    return ops, server, restore


def _checked_rollout(labeler: Any, spec: Path, candidate: Path) -> Any:
    """The candidate, once it and the spec are checked whole; else exit 1 listing every problem.

    A candidate refused by validation or its tests never enters a rollout; a refused spec prints
    one ``error: SPEC.yaml: field: …`` line per problem.
    """
    from activelabel.cli._common import open_candidate
    from activelabel.stream.rollout import load_spec

    checked = open_candidate(candidate)
    try:
        load_spec(spec, labels=set(labeler.policy.labels) | set(checked.policy.labels))
    except RolloutError as exc:
        for problem in exc.problems[:-1]:
            err.print(f"[bold red]error:[/] {escape(f'{spec}: {problem}')}", highlight=False, soft_wrap=True)
        fail(f"{spec}: {exc.problems[-1]}" if exc.problems else str(exc))
    return checked


def _open_rollout(labeler: Any, spec: Path, checked: Any, state: Path | None, audit_log: Any) -> Any:
    """The rollout the worker follows (a new one, or the persisted one of the same candidate)."""
    from activelabel.stream.rollout import open_stream_rollout

    def on_change(rollout: Any, what: str) -> None:
        # Under the rollout's lock: read its fields only.
        logging.getLogger("activelabel.stream").warning("rollout %s: %s at step %g%% %s", rollout.id, what,
                                                        rollout.step, rollout.reason)
        if audit_log is not None:
            action = {"step": "rollout step", "promoted": "promote", "rolled_back": "rollback",
                      "aborted": "rollout abort", "paused": "rollout pause"}.get(what, what)
            audit_log.log_admin(action, actor="rollout", rollout=rollout.id, step=rollout.step,
                                candidate=str(rollout.candidate.version), reason=rollout.reason)

    try:
        return open_stream_rollout(spec, labeler, checked, state_file=state, on_change=on_change)
    except ActiveLabelError as exc:
        fail(str(exc), 2)
