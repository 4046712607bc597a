"""Checking what a stream holds: every ride message once, no second missing, nothing malformed.

Pure: :class:`StreamVerifier` takes the records read back from a stream (see
:mod:`simulator.verify_cli` for the reading) and builds a :class:`VerifyReport`. KPL-aggregated
records (magic ``f3 89 9a c2``, a protobuf body, an MD5 of the body) are unpacked into the
messages they carry, and so are records of newline-delimited messages; an aggregate whose
digest or body is wrong counts as malformed.

What is counted, per race and in total:

- ``duplicates``: extra copies of a uuid already seen; what a retried request whose response
  was lost leaves behind, harmless to a consumer that de-duplicates on uuid.
- ``gaps``: seconds missing between a rider's first and last message in a race: lost messages.
- ``malformed``: records (or aggregated sub-records) that are not ride messages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from alleycat_rider.message import MessageError, RideMessage
from simulator.kpl import AggregateError, deaggregate
from simulator.shards import Shard, hash_key

#: Examples of each problem kept for the report.
MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRecord:
    """One record as GetRecords returns it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RaceReport:
    """What the stream holds of one race."""

    race_id: int
    messages: int
    unique: int
    duplicates: int
    gaps: int
    riders: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardCount:
    """Records read from one shard."""

    shard_id: str
    records: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """The verdict on a stream's contents."""

    stream: str
    records: int
    """Kinesis records read (an aggregate counts once)."""
    messages: int
    """Valid ride messages, aggregates unpacked."""
    unique: int
    """Distinct uuids."""
    duplicates: int
    """Messages whose uuid was already seen."""
    gaps: int
    """Seconds missing between a rider's first and last message of a race."""
    malformed: int
    """Records or sub-records that are not valid ride messages."""
    aggregated: int
    """KPL aggregates among the records."""
    off_shard: int
    """Records on a shard their partition key does not hash to: expected only with an
    ExplicitHashKey (``--partition-key balanced``), otherwise a routing fault."""
    shards: tuple[ShardCount, ...]
    races: tuple[RaceReport, ...]
    gap_examples: tuple[str, ...] = ()
    malformed_examples: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No gaps and nothing malformed (duplicates alone are not a loss)."""
        return self.gaps == 0 and self.malformed == 0

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able values (``alleycat verify --json``)."""
        return {
            "stream": self.stream,
            "ok": self.ok,
            "records": self.records,
            "messages": self.messages,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "malformed": self.malformed,
            "aggregated": self.aggregated,
            "off_shard": self.off_shard,
            "shards": [{"shard_id": s.shard_id, "records": s.records} for s in self.shards],
            "races": [
                {
                    "race_id": r.race_id,
                    "messages": r.messages,
                    "unique": r.unique,
                    "duplicates": r.duplicates,
                    "gaps": r.gaps,
                    "riders": r.riders,
                }
                for r in self.races
            ],
            "gap_examples": list(self.gap_examples),
            "malformed_examples": list(self.malformed_examples),
        }


@dataclass(slots=True)
class _Race:
    messages: int = 0
    duplicates: int = 0
    seconds: dict[int, set[int]] = field(default_factory=dict)
    """Racer id -> the seconds seen."""


class StreamVerifier:
    """Accumulates records read back from a stream; :meth:`report` gives the verdict.

    Args:
        stream: The stream's name, for the report.
        shards: Every shard read, with its hash range (closed shards too); a record's shard is
            checked against its partition key's hash only when the ranges are known.
    """

    def __init__(self, stream: str, shards: Sequence[Shard] = ()) -> None:
        self.stream = stream
        self._ranges = {s.shard_id: s for s in shards}
        self._records: Counter[str] = Counter({s.shard_id: 0 for s in shards})
        self._uuids: set[str] = set()
        self._races: dict[int, _Race] = {}
        self._messages = self._duplicates = self._malformed = 0
        self._aggregated = self._off_shard = 0
        self._malformed_examples: list[str] = []

    @property
    def records(self) -> int:
        """Records taken in so far."""
        return sum(self._records.values())

    def add_all(self, records: Iterable[StreamRecord]) -> None:
        """Take in many records."""
        for record in records:
            self.add(record)

    def add(self, record: StreamRecord) -> None:
        """Take in one record read from the stream."""
        self._records[record.shard_id] += 1
        self._check_shard(record)
        try:
            parts = deaggregate(record.data)
        except AggregateError as exc:
            self._bad(record, str(exc))
            return
        if parts is None:
            # One message, or several as newline-delimited JSON (``--batching buffered``).
            lines = [line for line in record.data.split(b"\n") if line.strip()]
            if not lines:
                self._bad(record, "empty record")
            for line in lines:
                self._message(record, line)
            return
        self._aggregated += 1
        for _key, data in parts:
            self._message(record, data)

    def report(self) -> VerifyReport:
        """The verdict on everything taken in so far."""
        races = []
        gap_examples: list[str] = []
        total_gaps = 0
        for race_id in sorted(self._races):
            race = self._races[race_id]
            gaps = 0
            for racer_id in sorted(race.seconds):
                seconds = race.seconds[racer_id]
                missing = max(seconds) - min(seconds) + 1 - len(seconds)
                if missing and len(gap_examples) < MAX_EXAMPLES:
                    absent = sorted(set(range(min(seconds), max(seconds) + 1)) - seconds)
                    shown = ", ".join(map(str, absent[:10])) + ("..." if len(absent) > 10 else "")
                    gap_examples.append(f"race {race_id} racer {racer_id}: seconds {shown}")
                gaps += missing
            total_gaps += gaps
            races.append(
                RaceReport(
                    race_id=race_id,
                    messages=race.messages,
                    unique=race.messages - race.duplicates,
                    duplicates=race.duplicates,
                    gaps=gaps,
                    riders=len(race.seconds),
                )
            )
        return VerifyReport(
            stream=self.stream,
            records=sum(self._records.values()),
            messages=self._messages,
            unique=len(self._uuids),
            duplicates=self._duplicates,
            gaps=total_gaps,
            malformed=self._malformed,
            aggregated=self._aggregated,
            off_shard=self._off_shard,
            shards=tuple(
                ShardCount(shard_id=s, records=n) for s, n in sorted(self._records.items())
            ),
            races=tuple(races),
            gap_examples=tuple(gap_examples),
            malformed_examples=tuple(self._malformed_examples),
        )

    def _check_shard(self, record: StreamRecord) -> None:
        shard = self._ranges.get(record.shard_id)
        if shard is None:
            return
        if not shard.starting_hash_key <= hash_key(record.partition_key) <= shard.ending_hash_key:
            self._off_shard += 1

    def _message(self, record: StreamRecord, data: bytes) -> None:
        try:
            message = RideMessage.from_json(data)
        except MessageError as exc:
            self._bad(record, str(exc))
            return
        self._messages += 1
        race = self._races.get(message.race_id)
        if race is None:
            race = self._races[message.race_id] = _Race()
        race.messages += 1
        if message.uuid in self._uuids:
            self._duplicates += 1
            race.duplicates += 1
        else:
            self._uuids.add(message.uuid)
        race.seconds.setdefault(message.racer_id, set()).add(message.second)

    def _bad(self, record: StreamRecord, reason: str) -> None:
        self._malformed += 1
        if len(self._malformed_examples) < MAX_EXAMPLES:
            self._malformed_examples.append(f"{record.shard_id} {record.sequence_number}: {reason}")
