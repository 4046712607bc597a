"""Batching modes: how many ride messages go into one Kinesis record.

Between the fleet and the producer sits a batching stage. Each mode trades cost against latency:

- ``per-second`` (the default): every message is its own Kinesis record, sent within the second.
  One PUT payload unit per message (~230 bytes each, billed as 25 KB).
- ``buffered:N``: the client holds messages N seconds and packs those bound for the same shard
  into one record of newline-delimited JSON (one message a line, at most 1 MiB). PUT payload
  units then follow bytes, not messages: far fewer records and units, up to N seconds later.
- ``kpl``: KPL aggregation. Messages bound for the same shard are packed in the
  Kinesis Producer Library's aggregated record format (``aws-kinesis-agg``: magic bytes, a
  protobuf body, an MD5 digest), each keeping its own partition key, for at most 100 ms (KPL's
  ``RecordMaxBufferedTime``) or 25 KiB. Lambda and the KCL de-aggregate it transparently.

Messages are grouped by the shard their own key routes to, and a packed record is written under
its first message's key, so every message still lands on the shard its key names.
:func:`unpack` turns a record read back from the stream into the messages inside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from simulator.engine.batching import MIB, PUT_PAYLOAD_UNIT_BYTES, Record
from simulator.engine.counters import LatencyHistogram
from simulator.engine.kpl import deaggregate, new_aggregate
from simulator.engine.shards import ShardRouter
from simulator.engine.source import RecordSource

if TYPE_CHECKING:
    from aws_kinesis_agg.aggregator import AggRecord

    from simulator.engine.sink import Shard

#: KPL's default ``RecordMaxBufferedTime``: 100 ms.
KPL_MAX_BUFFERED_SECONDS = 0.1
#: KPL closes an aggregated record at one PUT payload unit: bigger ones cost as much per byte.
KPL_RECORD_BYTES = PUT_PAYLOAD_UNIT_BYTES
#: How long ``buffered`` holds messages when no number is given.
DEFAULT_BUFFER_SECONDS = 5.0


class BatchingKind(StrEnum):
    """How messages become Kinesis records."""

    PER_SECOND = "per-second"
    """One message, one record."""
    BUFFERED = "buffered"
    """Newline-delimited JSON of up to N seconds of one shard's messages."""
    KPL = "kpl"
    """The KPL aggregated record format."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchingMode:
    """A batching mode and how long it holds messages."""

    kind: BatchingKind = BatchingKind.PER_SECOND
    hold_seconds: float = 0.0
    """The longest a message waits in the client before its record is made."""
    max_record_bytes: int = MIB
    """A packed record is closed before it grows past this (data plus partition key)."""

    @property
    def label(self) -> str:
        """The mode as the command line spells it (``buffered:5``)."""
        if self.kind is BatchingKind.BUFFERED:
            return f"buffered:{self.hold_seconds:g}"
        if self.kind is BatchingKind.KPL and self.hold_seconds != KPL_MAX_BUFFERED_SECONDS:
            return f"kpl:{self.hold_seconds:g}"
        return self.kind.value

    def __reduce__(self) -> tuple[Callable[..., BatchingMode], tuple[BatchingKind, float, int]]:
        # Pickled by its fields (``alleycat compare`` hands modes to worker processes): the
        # compiled build cannot restore a frozen class attribute by attribute.
        return _batching_mode, (self.kind, self.hold_seconds, self.max_record_bytes)


def _batching_mode(kind: BatchingKind, hold_seconds: float, max_record_bytes: int) -> BatchingMode:
    return BatchingMode(kind=kind, hold_seconds=hold_seconds, max_record_bytes=max_record_bytes)


PER_SECOND = BatchingMode()
DEFAULT_BATCHING_MODES = (
    PER_SECOND,
    BatchingMode(kind=BatchingKind.BUFFERED, hold_seconds=DEFAULT_BUFFER_SECONDS),
    BatchingMode(
        kind=BatchingKind.KPL,
        hold_seconds=KPL_MAX_BUFFERED_SECONDS,
        max_record_bytes=KPL_RECORD_BYTES,
    ),
)

_MODE = re.compile(r"^(per-second|buffered|kpl)(?::(\d+(?:\.\d+)?))?$")


def parse_batching(text: str) -> BatchingMode:
    """Parse ``per-second``, ``buffered[:SECONDS]`` or ``kpl[:SECONDS]``.

    Raises:
        ValueError: the text names no mode, or a hold time out of range.
    """
    match = _MODE.match(text.strip().lower())
    if match is None:
        raise ValueError(f"unknown batching mode {text!r}: use per-second, buffered:N or kpl")
    kind = BatchingKind(match.group(1))
    seconds = match.group(2)
    if kind is BatchingKind.PER_SECOND:
        if seconds is not None:
            raise ValueError("per-second takes no number")
        return PER_SECOND
    default = DEFAULT_BUFFER_SECONDS if kind is BatchingKind.BUFFERED else KPL_MAX_BUFFERED_SECONDS
    hold = default if seconds is None else float(seconds)
    if not 0 < hold <= 60:
        raise ValueError("a hold time is more than 0 and at most 60 seconds")
    if kind is BatchingKind.KPL:
        return BatchingMode(kind=kind, hold_seconds=hold, max_record_bytes=KPL_RECORD_BYTES)
    return BatchingMode(kind=kind, hold_seconds=hold)


class _Pack:
    """The messages held for one shard."""

    __slots__ = ("first", "oldest", "datas", "times", "size", "agg")

    def __init__(self, first: Record, agg: AggRecord | None) -> None:
        self.first = first
        self.oldest = first.generated_at
        self.datas: list[bytes] = []
        self.times: list[float] = []
        self.size = len(first.partition_key.encode())
        self.agg = agg


class BatchingStage:
    """Packs a source's messages into Kinesis records according to a :class:`BatchingMode`.

    Args:
        source: where messages come from (a fleet).
        mode: how to pack them.
        shards: the stream's open shards, to group messages by the shard they go to.
    """

    def __init__(self, source: RecordSource, mode: BatchingMode, shards: tuple[Shard, ...]):
        self.source = source
        self.mode = mode
        self._router = ShardRouter(shards)
        self._packs: dict[int, _Pack] = {}
        self._scratch: list[Record] = []
        #: Ride messages taken from the source, and Kinesis records made of them.
        self.messages = 0
        self.records = 0
        #: How long each message waited in the client for its record, in ms.
        self.hold = LatencyHistogram()

    def leaderboard(self, per_class: int = 5) -> dict[int, list[tuple[str, int, float]]]:
        """The source's leaderboard (see :meth:`simulator.engine.fleet.Fleet.leaderboard`)."""
        return self.source.leaderboard(per_class)

    @property
    def done(self) -> bool:
        """True once the source is done and nothing is held."""
        return self.source.done and not self._packs

    @property
    def next_due(self) -> float | None:
        """The source's next message time."""
        return self.source.next_due

    @property
    def next_close(self) -> float | None:
        """When the oldest held record is due to go, or None when nothing is held."""
        if not self._packs:
            return None
        return min(p.oldest for p in self._packs.values()) + self.mode.hold_seconds

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        """Take the source's messages due by ``now``; append the records ready by then."""
        if self.mode.kind is BatchingKind.PER_SECOND:
            count = self.source.emit_until(now, out, limit)
            self.messages += count
            self.records += count
            return count
        before = len(out)
        scratch = self._scratch
        scratch.clear()
        self.messages += self.source.emit_until(now, scratch, limit)
        index_for = self._router.index_for
        for record in scratch:
            self._add(index_for(record.partition_key, record.explicit_hash_key), record, out)
        hold = self.mode.hold_seconds
        every = self.source.done
        for shard in [s for s, p in self._packs.items() if every or p.oldest + hold <= now]:
            out.append(self._close(self._packs.pop(shard), now))
        return len(out) - before

    def flush(self, now: float, out: list[Record]) -> None:
        """Close every held record now (the run is ending)."""
        for pack in self._packs.values():
            out.append(self._close(pack, now))
        self._packs.clear()

    def _add(self, shard: int, record: Record, out: list[Record]) -> None:
        pack = self._packs.get(shard)
        if pack is not None and record.generated_at - pack.oldest >= self.mode.hold_seconds:
            # Messages come a loop pass at a time (a quarter second of them in --fast and
            # --speed runs): a record holds no more than the hold time of them however many
            # arrive at once, closed when it was due.
            out.append(self._close(pack, pack.oldest + self.mode.hold_seconds))
            pack = None
        elif pack is not None and not self._fits(pack, record):
            out.append(self._close(pack, record.generated_at))
            pack = None
        if pack is None:
            kpl = self.mode.kind is BatchingKind.KPL
            pack = self._packs[shard] = _Pack(record, new_aggregate() if kpl else None)
        if pack.agg is not None:
            pack.agg.add_user_record(record.partition_key, record.data, record.explicit_hash_key)
            pack.size = pack.agg.get_size_bytes() + len(pack.first.partition_key.encode())
        else:
            pack.size += len(record.data) + (1 if pack.datas else 0)
        pack.datas.append(record.data)
        pack.times.append(record.generated_at)

    def _fits(self, pack: _Pack, record: Record) -> bool:
        # A conservative bound for KPL's protobuf framing: key, index and length fields.
        extra = len(record.data) + 1
        if pack.agg is not None:
            extra += len(record.partition_key) + len(record.explicit_hash_key or "") + 16
        return pack.size + extra <= self.mode.max_record_bytes

    def _close(self, pack: _Pack, now: float) -> Record:
        first = pack.first
        if pack.agg is not None:
            _, _, data = pack.agg.get_contents()
        else:
            data = b"\n".join(pack.datas)
        hold = self.hold
        for generated_at in pack.times:
            hold.add((now - generated_at) * 1000)
        self.records += 1
        return Record(
            data,
            first.partition_key,
            first.explicit_hash_key,
            pack.oldest,
            rider=first.rider if len(pack.datas) == 1 else -1,
            # The producer's TTL counts from when the record was made, not from its oldest
            # message: a hold as long as the TTL must not expire every packed record.
            enqueued_at=now,
            messages=len(pack.datas),
        )


def unpack(data: bytes) -> list[bytes]:
    """The ride messages inside one Kinesis record's data, whatever the batching mode.

    KPL-aggregated records are de-aggregated (:func:`simulator.engine.kpl.deaggregate`); anything
    else is split into lines (a single message has none).
    """
    users = deaggregate(data)
    if users is not None:
        return [payload for _, payload in users]
    return [line for line in data.split(b"\n") if line]
