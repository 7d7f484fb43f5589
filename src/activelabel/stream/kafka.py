"""The two Kafka ends of the stream worker, and the only place confluent-kafka is called.

``KafkaSource`` is a consumer-group member with manual commits; ``KafkaSink`` a
producer whose deliveries are checked batch by batch. Every confluent-kafka
error is translated here: ``SourceError`` for the consumer side, ``SinkError``
for the producer side, so the worker and the CLI never see a ``KafkaException``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from activelabel.errors import SinkError, SourceError
from activelabel.errors import ValueTooLarge as ValueTooLarge
from activelabel.stream.config import StreamConfig

Headers = list[tuple[str, str | bytes | None]]
"""Message headers as produced: ordered, names may repeat."""

# Commit failures that only mean "these partitions moved to another worker": the new
# owner re-reads from the last committed offset (at-least-once), so the worker goes on.
_REBALANCE_CODES = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._STATE,  # librdkafka: the partitions are no longer assigned
})


def _describe(exc: BaseException) -> str:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return err.str() if err is not None else str(exc)


def _code(exc: KafkaException) -> int | None:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return err.code() if err is not None else None


class KafkaSource:
    """A consumer-group member reading one topic; offsets are committed only when told."""

    def __init__(self, config: StreamConfig, *, logger: logging.Logger) -> None:
        self._config = config
        self._log = logger
        self._fatal: KafkaError | None = None
        try:
            self._consumer = Consumer({**config.consumer_settings(), "error_cb": self._on_error}, logger=logger)
        except KafkaException as exc:
            raise SourceError(f"invalid Kafka consumer settings: {_describe(exc)}") from exc

    def _on_error(self, err: KafkaError) -> None:
        # Transport errors are retried by librdkafka on its own; only fatal ones end the run.
        if err.fatal():
            self._fatal = err
        else:
            self._log.warning("kafka consumer: %s", err.str())

    def missing_topics(self, topics: Sequence[str], timeout_s: float) -> list[str]:
        """The ``topics`` the cluster does not have; ``SourceError`` when it cannot be reached."""
        try:
            metadata = self._consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise SourceError(f"cannot reach Kafka at {self._config.bootstrap_servers}: {_describe(exc)}") from exc
        return [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]

    def subscribe(self, on_assign: Callable[[list[int]], None], on_revoke: Callable[[list[int]], None]) -> None:
        """Join the group on the input topic; the callbacks get the partition numbers."""
        def assigned(_consumer: Any, partitions: list[TopicPartition]) -> None:
            on_assign([p.partition for p in partitions])

        def revoked(_consumer: Any, partitions: list[TopicPartition]) -> None:
            on_revoke([p.partition for p in partitions])

        try:
            self._consumer.subscribe([self._config.input_topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
        except KafkaException as exc:
            raise SourceError(f"cannot subscribe to {self._config.input_topic}: {_describe(exc)}") from exc

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages (fewer, or none, after ``timeout_s`` seconds)."""
        try:
            messages = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        except KafkaException as exc:
            raise SourceError(f"consuming {self._config.input_topic} failed: {_describe(exc)}") from exc
        if self._fatal is not None:
            raise SourceError(f"Kafka consumer failed: {self._fatal.str()}")
        good = []
        for message in messages:
            err = message.error()
            if err is None:
                good.append(message)
            elif err.fatal():
                raise SourceError(f"consuming {self._config.input_topic} failed: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                self._log.warning("kafka consumer: %s", err.str())
        return good

    def commit(self, offsets: dict[int, int]) -> bool:
        """Commit ``{partition: next offset}`` synchronously; False when a rebalance took the partitions."""
        if not offsets:
            return True
        topic = self._config.input_topic
        try:
            self._consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            if _code(exc) in _REBALANCE_CODES:
                self._log.warning("offset commit refused during a rebalance (%s): those messages may be labeled again by the new owner", _describe(exc))
                return False
            raise SourceError(f"committing offsets of {topic} failed: {_describe(exc)}") from exc
        return True

    def close(self) -> None:
        """Leave the group (so the partitions move to the other workers at once)."""
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("closing the Kafka consumer: %s", _describe(exc))


class KafkaSink:
    """A producer whose deliveries are confirmed by ``flush`` before offsets are committed."""

    def __init__(self, config: StreamConfig, *, logger: logging.Logger) -> None:
        self._config = config
        self._log = logger
        self._failures: list[KafkaError] = []
        settings = {
            **config.producer_settings(),
            # Successful deliveries need no callback: flush() returning 0 confirms them,
            # which keeps the per-message cost off the hot path.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
        }
        try:
            self._producer = Producer(settings, logger=logger)
        except KafkaException as exc:
            raise SinkError(f"invalid Kafka producer settings: {_describe(exc)}") from exc

    def _on_delivery(self, err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            self._failures.append(err)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._failures.append(err)
        else:
            self._log.warning("kafka producer: %s", err.str())

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, timestamp_ms: int) -> None:
        """Queue one message; ``ValueTooLarge`` when its size is refused, ``SinkError`` otherwise."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, timestamp=timestamp_ms)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.1)
            except KafkaException as exc:
                if _code(exc) == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise ValueTooLarge(f"{len(value or b'')} bytes is over the producer's message.max.bytes") from exc
                raise SinkError(f"producing to {topic} failed: {_describe(exc)}") from exc

    def flush(self, timeout_s: float) -> None:
        """Wait until every queued message is acknowledged; ``SinkError`` if any was not."""
        try:
            left = self._producer.flush(timeout_s)
        except KafkaException as exc:
            raise SinkError(f"flushing to Kafka failed: {_describe(exc)}") from exc
        if self._failures:
            first = self._failures[0]
            n = len(self._failures)
            self._failures = []
            raise SinkError(f"{n} message{'s' if n != 1 else ''} not delivered: {first.str()}")
        if left:
            raise SinkError(f"{left} message{'s' if left != 1 else ''} not acknowledged by {self._config.bootstrap_servers} within {timeout_s:g}s")

    def close(self, timeout_s: float) -> None:
        """Deliver what is still queued (best effort: called on the way out)."""
        try:
            left = self._producer.flush(timeout_s)
        except KafkaException as exc:
            self._log.warning("final flush failed: %s", _describe(exc))
            return
        if left:
            self._log.warning("%d produced messages were not acknowledged at shutdown", left)
