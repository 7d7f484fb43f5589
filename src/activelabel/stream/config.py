"""Inert configuration of the Kafka stream worker: validated, no I/O.

Every field documents its default and unit. The model only checks its own
invariants (topic names, distinct topics, positive sizes); whether the broker is
reachable and the topics exist is learned by the runtime when it starts.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from activelabel.errors import StreamConfigError, config_error
from activelabel.sources.jsonl import DEFAULT_MAX_DEPTH, DEFAULT_MAX_LINE_BYTES

# Kafka's own rule for topic names (kafka.common.internals.Topic).
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[^\s,:]+:\d{1,5}$")

# librdkafka settings the worker owns: letting a user override them would break
# the at-least-once promise (auto commit) or the group wiring.
_RESERVED_CONSUMER_KEYS = frozenset({
    "bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "auto.offset.reset", "session.timeout.ms",
})
_RESERVED_PRODUCER_KEYS = frozenset({"bootstrap.servers"})


class StreamConfig(BaseModel):
    """Everything one stream worker needs: where to read, where to write, how to batch.

    Example::

        StreamConfig(bootstrap_servers="127.0.0.1:9092", input_topic="requests",
                     output_topic="requests.labeled")
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        """Validate ``data``; every bad field is named in one ``StreamConfigError`` (also a ValueError)."""
        try:
            super().__init__(**data)
        except ValidationError as exc:  # pydantic's error stops here, as ours
            raise config_error(StreamConfigError, exc, "stream settings") from exc

    bootstrap_servers: str
    """Comma-separated ``host:port`` list of brokers (required)."""
    input_topic: str
    """Topic the worker consumes JSON objects from (required)."""
    output_topic: str
    """Topic labeled messages are produced to (required)."""
    dlq_topic: str | None = None
    """Dead-letter topic for messages that cannot be labeled; ``None`` means ``<output_topic>.dlq``."""
    group_id: str = "activelabel"
    """Consumer group; workers sharing it split the input topic's partitions."""
    labels_field: str = "labels"
    """Top-level field the labels object is written to."""
    explain: bool = False
    """Also write a ``label_meta`` object saying how each label was decided (slower)."""
    clearance: str | None = None
    """Highest sensitivity the output and DLQ topics' readers may see in clear (``None``: the policy's ``outputs.clearance``)."""
    key_label: str | None = None
    """Produce labeled messages keyed by this label's value (``None``: the input message's key). Refused for a pii/secret label."""
    batch_size: int = Field(default=500, ge=1, le=100_000)
    """Most messages taken per poll; offsets are committed once per batch, after delivery."""
    poll_timeout_s: float = Field(default=1.0, gt=0, le=60)
    """Seconds one poll waits for messages; also how quickly a stop request is noticed."""
    max_messages: int | None = Field(default=None, ge=1)
    """Stop after this many input messages (``None``: run until stopped)."""
    idle_timeout_s: float | None = Field(default=None, gt=0)
    """Stop after this many seconds without a message (``None``: never). The clock restarts
    when partitions are assigned, and before the first assignment the wait is extended by
    the session timeout, so the time it takes to join the group does not count."""
    max_value_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, ge=2)
    """Larger message values go to the DLQ as ``too_large`` (bytes)."""
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1)
    """More deeply nested values go to the DLQ as ``too_deep`` (levels)."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group with no committed offset starts: ``earliest`` labels the backlog."""
    session_timeout_ms: int = Field(default=45_000, ge=1_000, le=3_600_000)
    """Consumer group session timeout (ms): a silent worker is dropped from the group after it.
    Some brokers (Tansu) also hold the first join for about half of it."""
    flush_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to wait for a batch's produced messages to be acknowledged before failing."""
    broker_retry_s: float = Field(default=300.0, gt=0)
    """Seconds a batch keeps being retried, with backoff, while the broker does not acknowledge it
    or refuses the offset commit (a restart, a network cut); past it the worker stops with an
    error, its offsets not committed, so nothing is lost."""
    metadata_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait at start for the cluster's topic list (reachability and topic check)."""
    consumer_options: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka consumer settings (security, client.id, …); the worker's own keys are refused."""
    producer_options: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka producer settings (security, compression.type, linger.ms, …)."""

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not servers or bad:
            raise ValueError(f"expected a comma-separated host:port list, got {value!r}")
        return ",".join(servers)

    @field_validator("input_topic", "output_topic", "dlq_topic")
    @classmethod
    def _check_topic(cls, value: str | None) -> str | None:
        if value is not None and (not _TOPIC_NAME.match(value) or value in (".", "..")):
            raise ValueError(f"{value!r} is not a valid Kafka topic name (letters, digits, '.', '_', '-'; at most 249)")
        return value

    @field_validator("group_id", "labels_field")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("consumer_options")
    @classmethod
    def _check_consumer_options(cls, value: dict[str, str]) -> dict[str, str]:
        return _refuse_reserved(value, _RESERVED_CONSUMER_KEYS)

    @field_validator("producer_options")
    @classmethod
    def _check_producer_options(cls, value: dict[str, str]) -> dict[str, str]:
        return _refuse_reserved(value, _RESERVED_PRODUCER_KEYS)

    @model_validator(mode="after")
    def _distinct_topics(self) -> StreamConfig:
        # Writing back to the input topic would label our own output forever.
        if self.input_topic in (self.output_topic, self.dead_letter_topic):
            raise ValueError(f"the input topic {self.input_topic!r} must differ from the output and dead-letter topics")
        if self.output_topic == self.dead_letter_topic:
            raise ValueError("the output and dead-letter topics must differ")
        return self

    @property
    def dead_letter_topic(self) -> str:
        """The DLQ topic actually used: ``dlq_topic`` or ``<output_topic>.dlq``."""
        return self.dlq_topic or f"{self.output_topic}.dlq"

    def consumer_settings(self) -> dict[str, Any]:
        """librdkafka consumer configuration: manual commits, the worker stores no offset by itself."""
        return {
            # librdkafka requires heartbeats well inside the session timeout.
            "heartbeat.interval.ms": max(100, min(3_000, self.session_timeout_ms // 4)),
            **self.consumer_options,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": self.auto_offset_reset,
            "session.timeout.ms": self.session_timeout_ms,
        }

    def producer_settings(self) -> dict[str, Any]:
        """librdkafka producer configuration: acknowledged by all replicas, no duplicates on retry."""
        return {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # A deleted output topic must stop the worker, not come back with the broker's
            # default partition count because the producer asked for it.
            "allow.auto.create.topics": False,
            **self.producer_options,
            "bootstrap.servers": self.bootstrap_servers,
        }


def _refuse_reserved(options: dict[str, str], reserved: frozenset[str]) -> dict[str, str]:
    clash = sorted(set(options) & reserved)
    if clash:
        raise ValueError(f"{', '.join(clash)} {'is' if len(clash) == 1 else 'are'} set by the worker itself; use the matching StreamConfig field")
    return options
