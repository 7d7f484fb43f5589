"""What the worker writes: header names and the headers of labeled and dead-lettered messages.

Pure functions, no Kafka client: the message formats are part of the contract
(docs/stream.md) and are tested through the worker's output.
"""

from __future__ import annotations

from activelabel.sinks.kafka import Headers

# What ``Message.headers()`` may hand back: a list of pairs from the consumer, a dict if
# someone built the message by hand, None without headers.
HeadersIn = Headers | dict[str, str | bytes | None] | None

POLICY_VERSION_HEADER = "activelabel-policy-version"
"""On every output and dead-letter message: the version of the policy that labeled it."""
ARM_HEADER = "activelabel-arm"
"""On output messages while a rollout runs: ``serving`` or ``candidate``, the arm whose version labeled it."""
DLQ_KIND_HEADER = "activelabel-dlq-kind"
"""Stable machine-readable reason: invalid_json, invalid_utf8, not_object, too_large, too_deep, empty, label_failed, output_too_large, output_refused."""
DLQ_REASON_HEADER = "activelabel-dlq-reason"
"""Human-readable reason (UTF-8, at most ``MAX_REASON_BYTES``)."""
DLQ_TOPIC_HEADER = "activelabel-source-topic"
DLQ_PARTITION_HEADER = "activelabel-source-partition"
DLQ_OFFSET_HEADER = "activelabel-source-offset"
DLQ_VALUE_DROPPED_HEADER = "activelabel-dlq-value-dropped"
"""Present (value ``too_large``) when the original bytes were too large to produce again;
the coordinates headers still point at the original message."""

MAX_REASON_BYTES = 1024

# The headers the worker sets itself: an input that already carries them (a labeled
# topic labeled again) has its old values replaced, never duplicated.
_OWN_HEADERS = frozenset({
    POLICY_VERSION_HEADER, ARM_HEADER, DLQ_KIND_HEADER, DLQ_REASON_HEADER, DLQ_TOPIC_HEADER,
    DLQ_PARTITION_HEADER, DLQ_OFFSET_HEADER, DLQ_VALUE_DROPPED_HEADER,
})


def _foreign(headers: HeadersIn) -> Headers:
    if not headers:
        return []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(name, value) for name, value in pairs if name not in _OWN_HEADERS]


def _clip(reason: str) -> bytes:
    # Cut on a character boundary so the header stays valid UTF-8.
    return reason.encode("utf-8", "replace")[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode()


def labeled_headers(headers: HeadersIn, policy_version: bytes, arm: bytes | None = None) -> Headers:
    """The input's headers, in order, plus the policy version (and the rollout arm during a rollout)."""
    kept = _foreign(headers)
    kept.append((POLICY_VERSION_HEADER, policy_version))
    if arm is not None:
        kept.append((ARM_HEADER, arm))
    return kept


def dead_letter_headers(headers: HeadersIn, policy_version: bytes, *, kind: str, reason: str,
                        topic: str, partition: int, offset: int) -> Headers:
    """The input's headers plus why the message was dead-lettered and where it came from."""
    kept = _foreign(headers)
    kept += [
        (DLQ_KIND_HEADER, kind.encode()),
        (DLQ_REASON_HEADER, _clip(reason)),
        (DLQ_TOPIC_HEADER, topic.encode()),
        (DLQ_PARTITION_HEADER, str(partition).encode()),
        (DLQ_OFFSET_HEADER, str(offset).encode()),
        (POLICY_VERSION_HEADER, policy_version),
    ]
    return kept
