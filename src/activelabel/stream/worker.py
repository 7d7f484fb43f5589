"""The stream worker: a consumer-group member that labels each message and produces it on.

One batch at a time: poll up to ``batch_size`` messages, label each (or
dead-letter it), wait until every produced message is acknowledged, then commit
the batch's offsets. A crash anywhere before the commit means the batch is read
again: at-least-once delivery, never a loss. Because a batch is committed before
the next poll, and partitions are only handed over inside a poll, a clean
rebalance or shutdown does not duplicate anything either.

With a ``Rollout`` (``activelabel stream --rollout SPEC.yaml --candidate P``) every
message is labeled through it: served by its sticky arm, compared with the other
version, and produced with the ``activelabel-policy-version`` of the version that
labeled it and its ``activelabel-arm``. The rollout is evaluated after each batch
and persists its state, so a restarted worker resumes it at the same step. An
``AuditLog`` observer writes each labeled message's decision (door ``stream``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from activelabel.engine.record_loop import RecordLoop, Where
from activelabel.errors import SinkError, SourceError, StreamConfigError
from activelabel.governance.output import OutputGuard
from activelabel.governance.protect import Protector
from activelabel.governance.sensitivity import policy_key_use_problems
from activelabel.sinks.kafka import Delivery, KafkaSink, ValueTooLarge
from activelabel.sources.jsonl import ReadLimits
from activelabel.sources.kafka import KafkaSource
from activelabel.stream.config import StreamConfig
from activelabel.stream.records import DLQ_VALUE_DROPPED_HEADER, dead_letter_headers, labeled_headers

_T = TypeVar("_T")
# Backoff between attempts while the broker is away: doubled each time, up to the cap.
_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0

if TYPE_CHECKING:
    from activelabel.service.policy_runtime import PolicySnapshot
    from activelabel.stream.ops_server import StreamOps


class StreamLabeler(Protocol):
    """What the worker needs of a labeler (``activelabel.Labeler`` has it)."""

    @property
    def version(self) -> str: ...

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]: ...

    def label(self, event: dict[str, Any]) -> Any: ...


@dataclass
class _Counts:
    """Committed counts: every input message is in exactly one of labeled / dead_lettered."""

    messages_in: int = 0
    labeled: int = 0
    dead_lettered: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    rebalanced_commits: int = 0
    first_message_at: float | None = None
    last_commit_at: float | None = None


class StreamWorker:
    """Labels a Kafka topic into another, bad messages into a dead-letter topic.

    Example::

        worker = StreamWorker(Labeler.from_file("policy.yaml"),
                              StreamConfig(bootstrap_servers="127.0.0.1:9092",
                                           input_topic="requests", output_topic="requests.labeled"))
        stats = worker.run()      # until stop(), SIGINT/SIGTERM, max_messages or idle_timeout_s

    ``labeler`` is an ``activelabel.Labeler`` (or anything of ``StreamLabeler``'s shape).
    With ``ops`` (``stream.ops_server.StreamOps``) the policy comes from its reloadable
    runtime instead (a reload takes over at the next batch) and every batch is reported
    to it (SLIs, consumer lag, tap).
    Run several workers with the same ``group_id`` to split the input topic's
    partitions between them.
    """

    def __init__(self, labeler: StreamLabeler, config: StreamConfig, *, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic, guard: OutputGuard | None = None,
                 ops: StreamOps | None = None, rollout: Any = None, audit: Any = None) -> None:
        self.config = config
        self._labeler = labeler
        self._ops = ops
        self.rollout = rollout
        self.audit = audit
        self._through: _RolloutLabeler | None = None
        self._output: _TopicOutput | None = None
        # Privacy: the output topic's guard (labels above its clearance leave treated); by default
        # the policy's outputs.clearance with keys from $ACTIVELABEL_PSEUDONYM_KEY.
        self.guard = guard if guard is not None else _default_guard(labeler, config)
        if config.key_label is not None:
            policy = getattr(labeler, "policy", None)
            problems = policy_key_use_problems(policy, [config.key_label], "a Kafka message key", option="key_label") if policy is not None else []
            if problems:
                raise StreamConfigError("; ".join(problems))
        self._log = logger or logging.getLogger("activelabel.stream")
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = _Counts()
        self._assigned: list[int] = []
        self._last_activity = clock()
        self._started: float | None = None
        self._elapsed = 0.0
        self._stopped_because = ""

    # ---- control ------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to finish its current batch (deliver, commit) and return. Thread-safe."""
        self._stop.set()

    @property
    def assignment(self) -> list[int]:
        """The input partitions this worker holds right now."""
        return list(self._assigned)

    def stats(self) -> dict[str, Any]:
        """Committed counts (``messages_in == labeled + dead_lettered``), timings, rate and partitions.

        ``elapsed_s`` is wall time; ``active_s`` runs from the first message polled to the
        last batch committed; ``messages_per_s`` is ``messages_in / active_s``.
        """
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> dict[str, Any]:
        c = self._counts
        elapsed = self._elapsed if self._started is None else self._clock() - self._started
        active = (c.last_commit_at - c.first_message_at) if c.first_message_at is not None and c.last_commit_at is not None else 0.0
        return {
            "messages_in": c.messages_in,
            "labeled": c.labeled,
            "dead_lettered": c.dead_lettered,
            "dead_letter_kinds": dict(sorted(c.dead_letter_kinds.items())),
            "batches": c.batches,
            "rebalanced_commits": c.rebalanced_commits,
            "elapsed_s": round(elapsed, 3),
            "active_s": round(active, 3),
            # While there was work, not while joining the group or waiting out the idle timeout.
            "messages_per_s": round(c.messages_in / active, 1) if active > 0 else 0.0,
            "assigned_partitions": self.assignment,
            "stopped_because": self._stopped_because,
            # M9 of the output topic: values protected, declared leaks (zero by construction); names and counts only.
            "privacy": None if self.guard is None else {
                "clearance": str(self.guard.clearance), "protected_labels": sorted(self.guard.hidden),
                **{k: v for k, v in self.guard.counters.snapshot().items() if k in ("protected_values", "declared_leaks")}},
        }

    # ---- the run ------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> dict[str, Any]:
        """Consume until stopped; return ``stats()``. ``SourceError`` / ``SinkError`` end the run.

        With ``handle_signals`` (and on the main thread), SIGINT and SIGTERM ask for
        a graceful stop; a second signal interrupts at once.
        """
        cfg = self.config
        source = KafkaSource(cfg, logger=self._log)
        sink: KafkaSink | None = None
        restore = self._install_signal_handlers() if handle_signals else None
        self._started = self._clock()
        clean = False
        try:
            sink = KafkaSink(cfg, logger=self._log)
            missing = source.missing_topics([cfg.input_topic, cfg.output_topic, cfg.dead_letter_topic], cfg.metadata_timeout_s)
            if missing:
                # Checked up front: a missing output topic would otherwise surface only
                # as a delivery timeout long after the first batch was labeled.
                raise SinkError(f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                f"do{'es' if len(missing) == 1 else ''} not exist on {cfg.bootstrap_servers}; create {'them' if len(missing) > 1 else 'it'} first")
            source.subscribe(self._on_assign, self._on_revoke)
            if self._ops is not None:
                self._ops.set_broker_ready(True)
            self._loop(source, sink)
            clean = True
        finally:
            if self._ops is not None:
                self._ops.set_broker_ready(False)
                self._ops.measure_lag(self._assigned, force=True)
            if sink is not None:
                # Every committed batch is already delivered; after a failure the uncommitted
                # batch will be read again anyway, so there is nothing worth waiting for.
                sink.close(cfg.flush_timeout_s if clean else 0.5)
            source.close()
            if restore is not None:
                restore()
            self._elapsed = self._clock() - self._started
            self._started = None
        return self.stats()

    def _loop(self, source: KafkaSource, sink: KafkaSink) -> None:
        cfg = self.config
        self._through = _RolloutLabeler(self.rollout) if self.rollout is not None else None
        loop = fast = self._record_loop(self._labeler)
        version = self._labeler.version.encode()
        serving: PolicySnapshot | None = None  # the ops policy the loops were built for
        # Joining the group can take up to a session timeout (and brokers may hold the
        # first join that long): that wait is not idleness, so the first deadline allows it.
        self._last_activity = self._clock() + cfg.session_timeout_ms / 1000
        while True:
            if self._stop.is_set():
                self._stopped_because = "stop requested"
                return
            want = cfg.batch_size
            if cfg.max_messages is not None:
                want = min(want, cfg.max_messages - self._counts.messages_in)
                if want <= 0:
                    self._stopped_because = f"max messages ({cfg.max_messages}) reached"
                    return
            messages = source.poll(want, cfg.poll_timeout_s)
            if self._ops is not None:
                self._ops.measure_lag(self._assigned)
            if not messages:
                if self.rollout is not None and self._counts.first_message_at is not None:
                    # No traffic for an interval: Inconclusive, a pause (joining the group is not that).
                    self.rollout.tick()
                if cfg.idle_timeout_s is not None and self._clock() - self._last_activity >= cfg.idle_timeout_s:
                    self._stopped_because = f"idle for {cfg.idle_timeout_s:g}s"
                    return
                continue
            self._last_activity = self._clock()
            if self._counts.first_message_at is None:
                self._counts.first_message_at = self._last_activity
            if self._ops is not None:
                snapshot = self._ops.snapshot()
                if snapshot is not serving:  # a reload was accepted: the next batch is labeled by it
                    serving, fast, version = snapshot, self._record_loop(snapshot.labeler), snapshot.version.encode()
                loop = self._record_loop(serving.labeler, self._ops.decision_hook(serving)) if self._ops.wants_decisions() else fast
            self._run_batch(messages, source, sink, loop, version, serving)
            self._counts.last_commit_at = self._clock()
            if self.rollout is not None:
                self.rollout.tick()  # evaluated between batches: no thread races the labeling

    def _record_loop(self, labeler: Any, on_decision: Callable[[dict[str, Any], Any], None] | None = None) -> RecordLoop:
        cfg = self.config
        # A rollout labels through both versions; shadow and audit watch the served decisions.
        observer = self._observe if (self._through is not None or self.audit is not None) else None
        return RecordLoop(self._through or labeler, limits=ReadLimits(cfg.max_value_bytes, cfg.max_depth),
                          labels_field=cfg.labels_field, explain=cfg.explain, jsonl=False, on_decision=on_decision,
                          guard=self._guard_for(labeler), observer=observer)

    def _guard_for(self, labeler: Any) -> OutputGuard | None:
        """The output guard for ``labeler``'s policy: after a reload, the same clearance and keys over the new labels."""
        if labeler is self._labeler or self.guard is None:
            return self.guard if labeler is self._labeler else _default_guard(labeler, self.config)
        return OutputGuard.of(labeler.policy, door=self.guard.door, protector=self.guard.protector,
                              clearance=self.guard.clearance, counters=self.guard.counters)

    def _run_batch(self, messages: list[Message], source: KafkaSource, sink: KafkaSink,
                   loop: RecordLoop, version: bytes, snapshot: PolicySnapshot | None = None) -> None:
        """Label and produce one batch (the shared record loop), wait for delivery, then commit it."""
        cfg = self.config
        timer = self._ops.batch_timer() if self._ops is not None else None
        offsets: dict[int, int] = {}
        for msg in messages:
            offsets[msg.partition()] = msg.offset() + 1  # type: ignore[index,operator]  # set on consumed messages
        output = _TopicOutput(sink, cfg.output_topic, version, key_label=cfg.key_label, labels_field=cfg.labels_field)
        self._output = output
        observed = self._ops.observe_output(output) if self._ops is not None else output
        counts = loop.run([(messages, [msg.value() for msg in messages])], observed)
        spent = (timer.seconds(), timer.cpu_seconds()) if timer is not None else (0.0, 0.0)  # labeling, not delivery
        # Dead letters go after the labeled messages, in input order, as they always have.
        for _pos, msg, kind, reason in sorted(output.dead, key=lambda d: d[0]):
            self._dead_letter(sink, msg, kind, reason, version)
        # Labeled messages the broker refused for what they are: now dead letters.
        refused = self._deliver(source, sink, version)
        committed = self._commit(source, offsets)
        with self._lock:  # stats() may be read from another thread: keep the sums consistent
            c = self._counts
            c.messages_in += counts.records_in
            c.dead_lettered += counts.dead_lettered + len(refused)
            c.labeled += counts.labeled - len(refused)
            for kind, n in counts.dead_letter_kinds.items():
                c.dead_letter_kinds[kind] = c.dead_letter_kinds.get(kind, 0) + n
            if refused:
                c.dead_letter_kinds["output_refused"] = c.dead_letter_kinds.get("output_refused", 0) + len(refused)
            c.batches += 1
            if not committed:
                c.rebalanced_commits += 1
        if self._ops is not None and snapshot is not None:
            self._ops.observe_batch(snapshot, spent, counts.labeled, counts.dead_letter_kinds, observed)

    # ---- delivery, commit and broker outages ---------------------------
    # Kept apart from the record loop: these decide when a batch may be committed.

    def _deliver(self, source: KafkaSource, sink: KafkaSink, version: bytes) -> list[tuple[Message, str, str]]:
        """Wait until the broker has the whole batch; return the labeled messages it refused, now dead-lettered.

        A refused labeled message goes to the DLQ as ``output_refused``; a refused
        dead letter, a deleted topic or an outage past ``broker_retry_s`` raises
        ``SinkError`` before anything of the batch is committed.
        """
        cfg = self.config
        refused = self._await_delivery(source, sink).refused
        if len(refused) > 1:
            # A broker refuses a whole record batch for one bad record (INVALID_RECORD):
            # send each refused message alone, so only the ones refused on their own are dead letters.
            alone = []
            for produced, _reason in refused:
                sink.produce(produced.topic, produced.key, produced.value, produced.headers, produced.timestamp_ms, produced.origin)
                alone += self._await_delivery(source, sink).refused
            refused = alone
        dead: list[tuple[Message, str, str]] = []
        for produced, reason in refused:
            if produced.topic != cfg.output_topic or produced.origin is None:
                raise SinkError(f"the dead-letter topic {cfg.dead_letter_topic} refused a message ({reason}); "
                                "the batch's offsets were not committed, so it will be labeled again")
            msg: Message = produced.origin  # type: ignore[assignment]  # the worker produces with the input message
            dead.append((msg, "output_refused", reason))
            self._dead_letter(sink, msg, "output_refused", reason, version)
        if dead and self._await_delivery(source, sink).refused:
            raise SinkError(f"the dead-letter topic {cfg.dead_letter_topic} refused a message; the batch's offsets were not committed")
        # Some brokers (Tansu) acknowledge writes to a topic deleted mid-run and keep
        # nothing: before committing, make sure the labeled copies have somewhere to be.
        self._with_retry("checking the output topics", lambda: self._check_topics(sink))
        return dead

    def _await_delivery(self, source: KafkaSource, sink: KafkaSink) -> Delivery:
        """``sink.deliver()``, producing the batch again with backoff while the broker is away."""
        cfg = self.config
        deadline = self._clock() + cfg.broker_retry_s
        backoff = _FIRST_BACKOFF_S
        while True:
            outcome = sink.deliver(cfg.flush_timeout_s)
            if outcome.unavailable is None:
                return outcome
            with contextlib.suppress(SourceError):  # unreachable: keep retrying; missing: stop now
                self._check_topics(sink)
            self._back_off(outcome.unavailable, "producing the batch again", backoff, deadline)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            sink.replay()

    def _commit(self, source: KafkaSource, offsets: dict[int, int]) -> bool:
        """Commit the batch's offsets, retried with backoff while the group coordinator is away."""
        return self._with_retry("committing offsets", lambda: source.commit(offsets))

    def _with_retry(self, what: str, attempt: Callable[[], _T]) -> _T:
        deadline = self._clock() + self.config.broker_retry_s
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                return attempt()
            except SourceError as exc:
                self._back_off(str(exc), what + " again", backoff, deadline)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _back_off(self, problem: str, then: str, backoff: float, deadline: float) -> None:
        """Wait ``backoff`` seconds before the next attempt, or raise ``SinkError`` when retrying is over."""
        if self._stop.is_set():
            raise SinkError(f"{problem}; stop requested while Kafka was unavailable: the last batch was not committed "
                            "and will be labeled again by the next worker")
        if self._clock() + backoff > deadline:
            raise SinkError(f"{problem}; gave up after retrying for {self.config.broker_retry_s:g}s (broker_retry_s): "
                            "the last batch was not committed and will be labeled again once Kafka is back")
        self._log.warning("%s; %s in %.1fs", problem, then, backoff)
        self._stop.wait(backoff)

    def _check_topics(self, sink: KafkaSink) -> None:
        cfg = self.config
        missing = sink.missing_topics([cfg.output_topic, cfg.dead_letter_topic], cfg.metadata_timeout_s)
        if missing is None:
            raise SourceError(f"cannot list the topics of {cfg.bootstrap_servers}")
        if missing:
            raise SinkError(f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"disappeared from {cfg.bootstrap_servers} while running; the last batch was not committed "
                            "and will be labeled again once the topic exists (create it, then start the worker)")

    def _observe(self, wheres: list[Where], events: list[dict[str, Any]], decisions: list[Any]) -> None:
        """The record loop's chunk observer: the version and arm of each message, and the audit log."""
        output = self._output
        through = self._through
        assert output is not None  # set by _run_batch before the loop runs
        for (messages, pos), decision in zip(wheres, decisions, strict=True):
            arm = through.arm_of(decision) if through is not None else None
            output.served[id(messages[pos])] = (decision.policy_version.encode(), arm.encode() if arm else None)
        if self.audit is not None:
            name = str(self._labeler.policy.metadata.name or "") if hasattr(self._labeler, "policy") else ""
            items = []
            for (messages, pos), event, decision in zip(wheres, events, decisions, strict=True):
                msg = messages[pos]
                items.append((decision, f"{msg.topic()}/{msg.partition()}/{msg.offset()}", event,
                              through.arm_of(decision) if through is not None else "stable"))
            self.audit.log_decisions(items, door="stream", policy_name=name)
        if through is not None:
            through.arms.clear()

    def _dead_letter(self, sink: KafkaSink, msg: Message, kind: str, reason: str, version: bytes) -> None:
        """Produce the original bytes, unchanged, with the reason and origin in headers."""
        headers = dead_letter_headers(msg.headers(), version, kind=kind, reason=reason,
                                      topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0)
        topic = self.config.dead_letter_topic
        try:
            sink.produce(topic, msg.key(), msg.value(), headers, _timestamp(msg))
        except ValueTooLarge:
            # The coordinates in the headers still lead back to the original bytes.
            headers.append((DLQ_VALUE_DROPPED_HEADER, b"too_large"))
            sink.produce(topic, msg.key(), None, headers, _timestamp(msg))

    # ---- group and signal callbacks -----------------------------------

    def _on_assign(self, partitions: list[int]) -> None:
        self._assigned = sorted(set(self._assigned) | set(partitions))
        # Joining a group can take seconds; the idle clock starts once there is work to wait for.
        self._last_activity = self._clock()
        self._log.info("assigned partitions %s of %s", partitions, self.config.input_topic)

    def _on_revoke(self, partitions: list[int]) -> None:
        # Nothing to commit here: the previous batch was committed before this poll began.
        gone = set(partitions)
        self._assigned = [p for p in self._assigned if p not in gone]
        self._log.info("partitions %s of %s revoked", partitions, self.config.input_topic)

    def _install_signal_handlers(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt  # second signal: stop waiting for the broker
            self._log.warning("received %s: finishing the current batch", signal.Signals(signum).name)
            self.stop()

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


class _TopicOutput:
    """The record loop's output for one batch: labeled messages produced at once, dead letters kept for after."""

    def __init__(self, sink: KafkaSink, topic: str, version: bytes, *, key_label: str | None = None, labels_field: str = "labels") -> None:
        self.sink = sink
        self.topic = topic
        self.version = version
        self.key_label = key_label
        self.labels_field = labels_field
        self.dead: list[tuple[int, Message, str, str]] = []  # (position in the batch, message, kind, reason)
        # Per message (by identity) during a rollout or an audit: the version and arm that labeled it.
        self.served: dict[int, tuple[bytes, bytes | None]] = {}

    def write_many(self, where: list[Where], lines: list[bytes]) -> list[tuple[int, str, str]]:
        refused = []
        produce = self.sink.produce
        for i, ((messages, pos), value) in enumerate(zip(where, lines)):
            msg = messages[pos]
            version, arm = self.served.get(id(msg), (self.version, None))
            try:
                key = msg.key() if self.key_label is None else self._key_of(value)
                produce(self.topic, key, value, labeled_headers(msg.headers(), version, arm), _timestamp(msg), msg)
            except ValueTooLarge as exc:
                refused.append((i, "output_too_large", f"the labeled message is too large to produce: {exc}"))
        return refused

    def _key_of(self, value: bytes) -> bytes | None:
        """The ``key_label`` value of a labeled message (checked public or internal at start), or no key when unset."""
        labels = orjson.loads(value).get(self.labels_field) or {}
        got = labels.get(self.key_label)
        if got is None:
            return None
        return got.encode() if isinstance(got, str) else orjson.dumps(got)

    def dead_letter(self, where: Where, raw: bytes | None, kind: str, reason: str) -> None:
        messages, pos = where
        self.dead.append((pos, messages[pos], kind, reason))


def _default_guard(labeler: Any, config: StreamConfig) -> OutputGuard | None:
    policy = getattr(labeler, "policy", None)
    if policy is None:
        return None  # a bare StreamLabeler declares no sensitivities: nothing to protect by
    return OutputGuard.of(policy, door="kafka", protector=Protector.configured(), clearance=config.clearance)


class _RolloutLabeler:
    """A labeler that labels through a rollout, remembering each decision's arm for the observer."""

    def __init__(self, rollout: Any) -> None:
        self.rollout = rollout
        self.version = rollout.serving.version
        self.arms: dict[int, str] = {}

    def label(self, event: dict[str, Any]) -> Any:
        from activelabel.quality.store import record_id_for

        decision, arm = self.rollout.label(event, record_id=record_id_for(event))
        self.arms[id(decision)] = arm
        return decision

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        return dict(self.label(event).labels)

    def arm_of(self, decision: Any) -> str:
        return self.arms.get(id(decision), "serving")


def _timestamp(msg: Message) -> int:
    # Keep the event's time on the labeled copy; 0 lets the producer stamp "now".
    kind, ts = msg.timestamp()
    return ts if kind != TIMESTAMP_NOT_AVAILABLE and ts > 0 else 0
