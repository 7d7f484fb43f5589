"""The Kafka producer end of the stream worker (``KafkaSink``).

Deliveries are checked batch by batch: ``flush`` returns only once every
produced message is acknowledged. Every confluent-kafka error on the producer
side is translated here into ``SinkError`` (``ValueTooLarge`` for a refused size).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from activelabel.errors import SinkError
from activelabel.errors import ValueTooLarge as ValueTooLarge
from activelabel.sources.kafka import describe_kafka_error, kafka_error_code

if TYPE_CHECKING:  # a runtime import would be circular: activelabel.stream imports this module
    from activelabel.stream.config import StreamConfig

Headers = list[tuple[str, str | bytes | None]]
"""Message headers as produced: ordered, names may repeat."""


# Delivery errors that are about the message itself: sending it again cannot help, so
# it goes to the dead-letter topic. Every other failure (timeouts, a broker away, a
# fenced idempotent producer after a broker restart) is about the broker: the batch
# is produced again, with backoff, and its offsets are not committed meanwhile.
_REFUSED_MESSAGE_CODES = frozenset(
    getattr(KafkaError, name) for name in (
        "MSG_SIZE_TOO_LARGE", "INVALID_MSG", "INVALID_RECORD", "INVALID_TIMESTAMP",
        "INVALID_MSG_SIZE", "_BAD_MSG", "_MSG_SIZE_TOO_LARGE", "_INVALID_ARG",
    ) if hasattr(KafkaError, name)
)


_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class Produced(NamedTuple):
    """One message handed to the producer, kept until the broker acknowledges its batch.

    A tuple, not a dataclass: one is built per message on the hot path.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int
    origin: object
    """What the caller produced it for (the worker: the input message), handed back on refusal."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of waiting for a batch: refused messages, or why the broker did not answer."""

    refused: list[tuple[Produced, str]] = field(default_factory=list)
    """Messages the broker refused for what they are, with the reason (they will never be accepted)."""
    unavailable: str | None = None
    """Set when delivery did not complete for a reason of the broker's (retry the batch later)."""


class KafkaSink:
    """A producer whose deliveries are confirmed batch by batch before offsets are committed.

    Every message produced since the last confirmed batch is kept (``Produced``), so a
    batch can be produced again (``replay``) after the broker restarts, and a message
    the broker refuses can be handed back to the caller with its ``origin``.
    """

    def __init__(self, config: StreamConfig, *, logger: logging.Logger) -> None:
        self._config = config
        self._log = logger
        self._journal: list[Produced] = []
        self._failed: list[tuple[KafkaError, Message]] = []
        self._fatal: KafkaError | None = None
        self._generation = 0
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        settings = {
            **self._config.producer_settings(),
            # Successful deliveries need no callback: flush() returning 0 confirms them,
            # which keeps the per-message cost off the hot path.
            "delivery.report.only.error": True,
            "on_delivery": self._delivery_callback(),
            "error_cb": self._on_error,
        }
        try:
            return Producer(settings, logger=self._log)
        except KafkaException as exc:
            raise SinkError(f"invalid Kafka producer settings: {describe_kafka_error(exc)}") from exc

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            # e.g. an idempotent producer the restarted broker no longer knows: this
            # producer is done; ``replay`` starts a new one.
            self._fatal = err
        else:
            self._log.warning("kafka producer: %s", err.str())

    def _delivery_callback(self) -> Callable[[KafkaError | None, Message], None]:
        # One callback per producer, not per message (that would cost an object per message).
        generation = self._generation

        def failed(err: KafkaError | None, message: Message) -> None:
            # Reports from a replaced producer, or of our own purge, are not news about this batch.
            if err is not None and generation == self._generation and err.code() not in _PURGED:
                self._failed.append((err, message))
        return failed

    def _entry_of(self, message: Message) -> Produced | None:
        """The journal entry a failed delivery report is about (rare path: a linear search)."""
        topic, key, value = message.topic(), message.key(), message.value()
        for entry in self._journal:
            if entry.value == value and entry.key == key and entry.topic == topic:
                return entry
        return None

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, timestamp_ms: int,
                origin: object = None) -> None:
        """Queue one message; ``ValueTooLarge`` when its size is refused, ``SinkError`` otherwise."""
        entry = Produced(topic, key, value, headers, timestamp_ms, origin)
        self._send(entry)
        self._journal.append(entry)

    def _send(self, entry: Produced) -> None:
        while True:
            try:
                self._producer.produce(entry.topic, value=entry.value, key=entry.key, headers=entry.headers,
                                       timestamp=entry.timestamp_ms)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._poll(0.1)
            except KafkaException as exc:
                if kafka_error_code(exc) == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise ValueTooLarge(f"{len(entry.value or b'')} bytes is over the producer's message.max.bytes") from exc
                raise SinkError(f"producing to {entry.topic} failed: {describe_kafka_error(exc)}") from exc
            except SystemError as exc:  # confluent-kafka's report of a callback interrupted by a fatal error
                raise SinkError(f"producing to {entry.topic} failed: {exc}") from exc

    def missing_topics(self, topics: list[str], timeout_s: float) -> list[str] | None:
        """The ``topics`` the cluster does not have, or None when it cannot be asked now.

        Asked on the producer's connection: the consumer's is usually busy with a
        long-poll fetch, behind which a metadata request waits up to ``fetch.wait.max.ms``.
        The producer never asks the broker to create a topic (``allow.auto.create.topics``).
        """
        try:
            metadata = self._producer.list_topics(timeout=timeout_s)
        except (KafkaException, SystemError) as exc:
            self._log.warning("kafka producer: listing topics failed: %s", describe_kafka_error(exc))
            return None
        return [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]

    def _poll(self, timeout_s: float) -> None:
        try:
            self._producer.poll(timeout_s)
        except (KafkaException, SystemError) as exc:
            self._log.warning("kafka producer: %s", describe_kafka_error(exc))

    def deliver(self, timeout_s: float | None = None) -> Delivery:
        """Wait (up to ``timeout_s``, default ``flush_timeout_s``) for the batch's acknowledgements.

        The journal is cleared only when the broker answered for every message
        (accepted or refused); otherwise ``unavailable`` says why and ``replay``
        sends the whole batch again.
        """
        if timeout_s is None:
            timeout_s = self._config.flush_timeout_s
        try:
            left = self._producer.flush(timeout_s)
        except (KafkaException, SystemError) as exc:
            # SystemError: confluent-kafka raises it when a fatal error interrupts a callback.
            return Delivery(unavailable=f"flushing to Kafka failed: {describe_kafka_error(exc)}")
        if self._fatal is not None:
            return Delivery(unavailable=f"the Kafka producer failed: {self._fatal.str()}")
        if left:
            return Delivery(unavailable=f"{left} message{'s' if left != 1 else ''} not acknowledged by "
                                        f"{self._config.bootstrap_servers} within {timeout_s:g}s")
        refused: list[tuple[Produced, str]] = []
        for err, message in self._failed:
            entry = self._entry_of(message)
            if err.code() not in _REFUSED_MESSAGE_CODES or entry is None:
                return Delivery(unavailable=f"{len(self._failed)} message(s) not delivered: {err.str()}")
            refused.append((entry, f"the broker refused the message: {err.str()}"))
        self._failed = []
        self._journal = []
        return Delivery(refused=refused)

    def replay(self) -> None:
        """Produce every message of the unconfirmed batch again, on a new producer.

        Messages the broker had already stored are stored twice: delivery stays at
        least once, never at most once.
        """
        # Always on a new producer: after an outage the old one may be fenced or hold an
        # idempotence sequence the restarted broker does not know, and retrying on it fails again.
        old = self._producer
        self._generation += 1
        self._producer, self._fatal, self._failed = self._new_producer(), None, []
        try:
            old.purge()
            old.flush(0)
        except (KafkaException, SystemError, RuntimeError) as exc:
            self._log.warning("discarding the previous producer: %s", describe_kafka_error(exc))
        for entry in self._journal:
            self._send(entry)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued message is acknowledged; ``SinkError`` if any was not (the ``Sink`` protocol)."""
        outcome = self.deliver(timeout_s)
        if outcome.unavailable is not None:
            raise SinkError(outcome.unavailable)
        if outcome.refused:
            n = len(outcome.refused)
            raise SinkError(f"{n} message{'s' if n != 1 else ''} not delivered: {outcome.refused[0][1]}")

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is still queued (best effort: called on the way out)."""
        if timeout_s is None:
            timeout_s = self._config.flush_timeout_s
        try:
            left = self._producer.flush(timeout_s)
        except (KafkaException, SystemError) as exc:
            self._log.warning("final flush failed: %s", describe_kafka_error(exc))
            return
        if left:
            self._log.warning("%d produced messages were not acknowledged at shutdown", left)
