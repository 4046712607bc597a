"""PutRecords packing: records and the limits no request may break.

A request holds at most 500 records and 5 MiB, and a record (data plus partition key) at most
1 MiB. The limits are configurable because streams can raise them (up to 10 MiB since 2025), but
never above what Kinesis accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 1024 * 1024
#: What Kinesis accepts at most, whatever a stream is configured for.
KINESIS_MAX_RECORDS = 500
KINESIS_MAX_REQUEST_BYTES = 10 * MIB
KINESIS_MAX_RECORD_BYTES = 10 * MIB
#: A PUT payload unit, the provisioned-mode billing unit: each started 25 KB of a record.
PUT_PAYLOAD_UNIT_BYTES = 25 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLimits:
    """The most one PutRecords request may carry."""

    max_records: int = 500
    max_request_bytes: int = 5 * MIB
    max_record_bytes: int = MIB

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= KINESIS_MAX_RECORDS:
            raise ValueError(f"records per request must be 1 to {KINESIS_MAX_RECORDS}")
        if not 1 <= self.max_request_bytes <= KINESIS_MAX_REQUEST_BYTES:
            raise ValueError(f"request size must be 1 to {KINESIS_MAX_REQUEST_BYTES} bytes")
        if not 1 <= self.max_record_bytes <= min(KINESIS_MAX_RECORD_BYTES, self.max_request_bytes):
            raise ValueError("record size must be at least 1 byte and at most the request size")


DEFAULT_BATCH_LIMITS = BatchLimits()


def put_payload_units(size: int) -> int:
    """PUT payload units billed for one record of ``size`` bytes."""
    return max(1, math.ceil(size / PUT_PAYLOAD_UNIT_BYTES))


class Record:
    """One Kinesis record on its way: the data, where it goes, and when it was made."""

    __slots__ = (
        "data",
        "partition_key",
        "explicit_hash_key",
        "size",
        "generated_at",
        "enqueued_at",
        "rider",
        "attempts",
        "messages",
        "maybe_written",
        "given_up",
    )

    def __init__(
        self,
        data: bytes,
        partition_key: str,
        explicit_hash_key: str | None,
        generated_at: float,
        rider: int = -1,
        enqueued_at: float | None = None,
        messages: int = 1,
    ) -> None:
        self.data = data
        self.partition_key = partition_key
        self.explicit_hash_key = explicit_hash_key
        #: What Kinesis counts against the record limit: data plus the partition key.
        self.size = len(data) + len(partition_key.encode())
        #: Simulation time (epoch seconds) the rider produced the message.
        self.generated_at = generated_at
        #: When the producer took the record in; the record TTL counts from here.
        self.enqueued_at = generated_at if enqueued_at is None else enqueued_at
        #: Index of the virtual rider that produced it (-1 when not one rider's).
        self.rider = rider
        #: PutRecords attempts so far.
        self.attempts = 0
        #: Ride messages inside (more than one when aggregated).
        self.messages = messages
        #: A request that carried it got no answer: it may be in the stream already.
        self.maybe_written = False
        #: Counted as dropped while a request carrying it was still in flight.
        self.given_up = False

    def __repr__(self) -> str:
        return f"Record(key={self.partition_key!r}, size={self.size}, attempts={self.attempts})"
