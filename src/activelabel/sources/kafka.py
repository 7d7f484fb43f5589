"""The Kafka consumer end of the stream worker (``KafkaSource``); with ``sinks.kafka``, the only place confluent-kafka is called.

``KafkaSource`` is a consumer-group member with manual commits. Every
confluent-kafka error on the consumer side is translated here into
``SourceError``, so the worker and the CLI never see a ``KafkaException``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from activelabel.errors import SourceError

if TYPE_CHECKING:  # a runtime import would be circular: activelabel.stream imports this module
    from activelabel.stream.config import StreamConfig

# Commit failures that only mean "these partitions moved to another worker": the new
# owner re-reads from the last committed offset (at-least-once), so the worker goes on.
_REBALANCE_CODES = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._STATE,  # librdkafka: the partitions are no longer assigned
})


def describe_kafka_error(exc: BaseException) -> str:
    """librdkafka's own text for a ``KafkaException`` (its ``str()`` is a repr)."""
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return err.str() if err is not None else str(exc)


def kafka_error_code(exc: BaseException) -> int | None:
    """The ``KafkaError`` code carried by a ``KafkaException``, if any."""
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
            raise SourceError(f"invalid Kafka consumer settings: {describe_kafka_error(exc)}") from exc

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
        except (KafkaException, SystemError) as exc:
            raise SourceError(f"cannot reach Kafka at {self._config.bootstrap_servers}: {describe_kafka_error(exc)}") from exc
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
            raise SourceError(f"cannot subscribe to {self._config.input_topic}: {describe_kafka_error(exc)}") from exc

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages (fewer, or none, after ``timeout_s`` seconds)."""
        try:
            messages = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        except SystemError as exc:  # confluent-kafka's report of a callback interrupted by an error
            raise SourceError(f"consuming {self._config.input_topic} failed: {exc}") from exc
        except KafkaException as exc:
            raise SourceError(f"consuming {self._config.input_topic} failed: {describe_kafka_error(exc)}") from exc
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
        except SystemError as exc:
            raise SourceError(f"committing offsets of {topic} failed: {exc}") from exc
        except KafkaException as exc:
            if kafka_error_code(exc) in _REBALANCE_CODES:
                self._log.warning("offset commit refused during a rebalance (%s): those messages may be labeled again by the new owner", describe_kafka_error(exc))
                return False
            raise SourceError(f"committing offsets of {topic} failed: {describe_kafka_error(exc)}") from exc
        return True

    def close(self) -> None:
        """Leave the group (so the partitions move to the other workers at once)."""
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("closing the Kafka consumer: %s", describe_kafka_error(exc))
