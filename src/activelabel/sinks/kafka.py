"""The Kafka producer end of the stream worker (``KafkaSink``).

Deliveries are checked batch by batch: ``flush`` returns only once every
produced message is acknowledged. Every confluent-kafka error on the producer
side is translated here into ``SinkError`` (``ValueTooLarge`` for a refused size).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from activelabel.errors import SinkError
from activelabel.sources.kafka import describe_kafka_error, kafka_error_code

if TYPE_CHECKING:  # a runtime import would be circular: activelabel.stream imports this module
    from activelabel.stream.config import StreamConfig

Headers = list[tuple[str, str | bytes | None]]
"""Message headers as produced: ordered, names may repeat."""


class ValueTooLarge(SinkError):
    """The broker or producer refuses a message of this size (``MSG_SIZE_TOO_LARGE``)."""


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
            raise SinkError(f"invalid Kafka producer settings: {describe_kafka_error(exc)}") from exc

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
                if kafka_error_code(exc) == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise ValueTooLarge(f"{len(value or b'')} bytes is over the producer's message.max.bytes") from exc
                raise SinkError(f"producing to {topic} failed: {describe_kafka_error(exc)}") from exc

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued message is acknowledged; ``SinkError`` if any was not.

        ``timeout_s`` defaults to the config's ``flush_timeout_s``.
        """
        if timeout_s is None:
            timeout_s = self._config.flush_timeout_s
        try:
            left = self._producer.flush(timeout_s)
        except KafkaException as exc:
            raise SinkError(f"flushing to Kafka failed: {describe_kafka_error(exc)}") from exc
        if self._failures:
            first = self._failures[0]
            n = len(self._failures)
            self._failures = []
            raise SinkError(f"{n} message{'s' if n != 1 else ''} not delivered: {first.str()}")
        if left:
            raise SinkError(f"{left} message{'s' if left != 1 else ''} not acknowledged by {self._config.bootstrap_servers} within {timeout_s:g}s")

    def close(self, timeout_s: float | None = None) -> None:
        """Deliver what is still queued (best effort: called on the way out)."""
        if timeout_s is None:
            timeout_s = self._config.flush_timeout_s
        try:
            left = self._producer.flush(timeout_s)
        except KafkaException as exc:
            self._log.warning("final flush failed: %s", describe_kafka_error(exc))
            return
        if left:
            self._log.warning("%d produced messages were not acknowledged at shutdown", left)
