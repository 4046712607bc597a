"""Checking what a stream holds: every ride message once, no second missing, nothing malformed.

Pure: :class:`StreamVerifier` takes the records read back from a stream (see
:mod:`simulator.verify.cli` for the reading) and builds a :class:`VerifyReport`. KPL-aggregated
records (magic ``f3 89 9a c2``, a protobuf body, an MD5 of the body) are unpacked into the
messages they carry, and so are records of newline-delimited messages; an aggregate whose
digest or body is wrong counts as malformed.

What is counted, per race window (``raceId``) and in total:

- ``duplicates``: extra copies of a uuid already seen; what a retried request whose response
  was lost leaves behind, harmless to a consumer that de-duplicates on uuid.
- ``gaps``: seconds missing between a rider's first and last message of one race: lost
  messages. Races shorter than the 5-minute window share a ``raceId``, so a rider's races are
  told apart by when each began: ``deviceTimestamp - (second - 1) * 1000``, exact for the
  simulator and within a few milliseconds for a real bike. Messages of a rider whose start
  estimates lie within :data:`RACE_START_TOLERANCE_MS` of each other are one race.
- ``malformed``: records (or aggregated sub-records) that are not ride messages.
- ``off_shard``: records on a shard the :class:`ShardRule` does not put them on. A few are a
  routing fault; most of the records checked (:attr:`VerifyReport.key_rule_mismatch`) means the
  stream was written with another partition-key rule than the one checked, and the report is
  then not ``ok``: nothing can be said of where records belong.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from alleycat_rider.core.message import MessageError, RideMessage
from simulator.engine.kpl import AggregateError, deaggregate
from simulator.engine.shards import hash_key
from simulator.engine.sink import Shard

#: Examples of each problem kept for the report.
MAX_EXAMPLES = 5
#: Race-start estimates of one rider this close (ms) are the same race. A rider's races begin
#: at least a second apart; a real bike's send times jitter by a few milliseconds.
RACE_START_TOLERANCE_MS = 500
#: The highest ``second`` taken as a race second (a day); a message past it is malformed.
MAX_RACE_SECOND = 86_400
#: The balanced strategy deals racer id ``FIRST_RACER_ID + i`` to the i-th shard (mod N).
FIRST_RACER_ID = 100


class ShardRule(StrEnum):
    """Where a record belongs, by the partition-key strategy the stream was written with."""

    MD5 = "md5"
    """On the shard whose hash range holds its partition key's MD5 (``random``, ``time``,
    ``class``, ``racer``: no ExplicitHashKey)."""
    BALANCED = "balanced"
    """Its riders on the shard ``balanced`` dealt them to: racer id ``100 + i`` on the i-th
    dealt shard in hash-key order, mod the shard count. GetRecords does not return the
    ExplicitHashKey, so the key's MD5 says nothing here."""
    MD5_OR_BALANCED = "md5-or-balanced"
    """Strategy unknown: off its shard only when neither rule puts it there."""
    SERVICE = "service"
    """The stream placed records itself (``auto``: service-managed distribution): any shard
    is right, none is checked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRecord:
    """One record as GetRecords returns it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    """Empty for a record written without one (a stream that spreads records itself)."""
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RaceReport:
    """What the stream holds of one race window (``raceId``: a 5-minute window).

    Races shorter than the window share it: ``rider_races`` counts each rider's races in it
    separately, and ``gaps`` sums the seconds missing in each of them.
    """

    race_id: int
    messages: int
    unique: int
    duplicates: int
    gaps: int
    """Seconds missing, summed over every rider's races in the window."""
    riders: int
    """Distinct racer ids in the window."""
    rider_races: int
    """Races of a rider in the window, summed over riders (``riders`` times the races each
    rode: more than ``riders`` when races are shorter than the window)."""


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
    """Records on a shard ``shard_rule`` does not put them on: a routing fault."""
    shard_rule: ShardRule = ShardRule.MD5
    """How a record's shard was checked."""
    shard_unchecked: int = 0
    """Records whose shard the rule cannot check: with ``balanced``, records holding no valid
    message or read from a shard riders were not dealt over (closed by resharding)."""
    shards: tuple[ShardCount, ...] = ()
    races: tuple[RaceReport, ...] = ()
    gap_examples: tuple[str, ...] = ()
    malformed_examples: tuple[str, ...] = ()

    @property
    def shard_checked(self) -> int:
        """Records whose shard was checked against ``shard_rule``."""
        return self.records - self.shard_unchecked

    @property
    def key_rule_mismatch(self) -> bool:
        """Most records checked are off their shard: the key rule checked is likely not the
        one the stream was written with."""
        return self.off_shard * 2 > self.shard_checked > 0

    @property
    def ok(self) -> bool:
        """No gaps, nothing malformed, and most records on their shard (duplicates alone are
        not a loss)."""
        return self.gaps == 0 and self.malformed == 0 and not self.key_rule_mismatch

    def problems(self) -> list[str]:
        """What keeps the report from being ``ok``, one line each (empty when it is)."""
        found = []
        if self.gaps or self.malformed:
            found.append(
                f"{self.gaps:,} missing seconds and {self.malformed:,} malformed records "
                f"in stream {self.stream!r}"
            )
        if self.key_rule_mismatch:
            found.append(
                f"{self.off_shard:,} of {self.shard_checked:,} records are off their shard "
                f"({self.shard_rule}): the likely cause is the key rule; pass the "
                "--partition-key the stream was written with"
            )
        return found

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
            "shard_rule": self.shard_rule.value,
            "shard_unchecked": self.shard_unchecked,
            "key_rule_mismatch": self.key_rule_mismatch,
            "problems": self.problems(),
            "shards": [{"shard_id": s.shard_id, "records": s.records} for s in self.shards],
            "races": [
                {
                    "race_id": r.race_id,
                    "messages": r.messages,
                    "unique": r.unique,
                    "duplicates": r.duplicates,
                    "gaps": r.gaps,
                    "riders": r.riders,
                    "rider_races": r.rider_races,
                }
                for r in self.races
            ],
            "gap_examples": list(self.gap_examples),
            "malformed_examples": list(self.malformed_examples),
        }


@dataclass(slots=True)
class _WindowCounts:
    """Messages and duplicates of one race window."""

    messages: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class _RaceSeconds:
    """The seconds seen of one rider's race, and the range of its race-start estimates (ms)."""

    earliest_ms: int
    latest_ms: int
    seen: int = 0
    """Bit ``s`` is set once second ``s`` arrived: a 300-second race takes 40 bytes."""

    @property
    def missing(self) -> list[int]:
        """The seconds absent between the first and the last seen."""
        low = (self.seen & -self.seen).bit_length() - 1
        return [s for s in range(low, self.seen.bit_length()) if not self.seen >> s & 1]

    @property
    def missing_count(self) -> int:
        """How many seconds are absent between the first and the last seen."""
        low = (self.seen & -self.seen).bit_length() - 1
        return self.seen.bit_length() - low - self.seen.bit_count()


#: ``(race_id, racer_id, start estimate // RACE_START_TOLERANCE_MS)``: estimates within one
#: bucket are within the tolerance of each other; neighbouring buckets are joined in the report.
_RaceKey = tuple[int, int, int]


class StreamVerifier:
    """Accumulates records read back from a stream; :meth:`report` gives the verdict.

    Memory grows with the distinct uuids and with the races of each rider (a few dozen bytes
    of seconds each), not with a rider's messages.

    Args:
        stream: The stream's name, for the report.
        shards: Every shard read, with its hash range (closed shards too); a record's shard is
            checked only when its range is known.
        shard_rule: How a record's shard is checked.
        dealt_over: The shards ``balanced`` dealt riders over (the stream's open shards when
            it was written); default all of ``shards``.
    """

    def __init__(
        self,
        stream: str,
        shards: Sequence[Shard] = (),
        *,
        shard_rule: ShardRule = ShardRule.MD5,
        dealt_over: Sequence[Shard] | None = None,
    ) -> None:
        self.stream = stream
        self.shard_rule = shard_rule
        self._ranges = {s.shard_id: s for s in shards}
        dealt = sorted(
            shards if dealt_over is None else dealt_over, key=lambda s: s.starting_hash_key
        )
        self._deal = {s.shard_id: i for i, s in enumerate(dealt)}
        self._records: Counter[str] = Counter({s.shard_id: 0 for s in shards})
        self._uuids: set[str] = set()
        self._windows: dict[int, _WindowCounts] = {}
        self._races: dict[_RaceKey, _RaceSeconds] = {}
        self._messages = self._duplicates = self._malformed = 0
        self._aggregated = self._off_shard = self._shard_unchecked = 0
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
        racers = [message.racer_id for message in self._messages_of(record)]
        on_shard = self._on_its_shard(record, racers)
        if on_shard is None:
            self._shard_unchecked += 1
        elif not on_shard:
            self._off_shard += 1

    def report(self) -> VerifyReport:
        """The verdict on everything taken in so far."""
        gaps: Counter[int] = Counter()
        rider_races: Counter[int] = Counter()
        riders: Counter[int] = Counter()
        gap_examples: list[str] = []
        for (race_id, racer_id), of_rider in self._rider_races():
            riders[race_id] += 1
            rider_races[race_id] += len(of_rider)
            for race in of_rider:
                missing = race.missing_count
                gaps[race_id] += missing
                if missing and len(gap_examples) < MAX_EXAMPLES:
                    # Name the race's start only when the window holds several of the rider's.
                    begun = f" from {_utc(race.earliest_ms)}" if len(of_rider) > 1 else ""
                    absent = race.missing
                    shown = ", ".join(map(str, absent[:10])) + ("..." if len(absent) > 10 else "")
                    gap_examples.append(f"race {race_id} racer {racer_id}{begun}: seconds {shown}")
        races = tuple(
            RaceReport(
                race_id=race_id,
                messages=window.messages,
                unique=window.messages - window.duplicates,
                duplicates=window.duplicates,
                gaps=gaps[race_id],
                riders=riders[race_id],
                rider_races=rider_races[race_id],
            )
            for race_id, window in sorted(self._windows.items())
        )
        return VerifyReport(
            stream=self.stream,
            records=sum(self._records.values()),
            messages=self._messages,
            unique=len(self._uuids),
            duplicates=self._duplicates,
            gaps=sum(gaps.values()),
            malformed=self._malformed,
            aggregated=self._aggregated,
            off_shard=self._off_shard,
            shard_rule=self.shard_rule,
            shard_unchecked=self._shard_unchecked,
            shards=tuple(
                ShardCount(shard_id=s, records=n) for s, n in sorted(self._records.items())
            ),
            races=races,
            gap_examples=tuple(gap_examples),
            malformed_examples=tuple(self._malformed_examples),
        )

    def _rider_races(self) -> Iterator[tuple[tuple[int, int], list[_RaceSeconds]]]:
        """Each rider of each race window with its races, joining start estimates that chain
        within the tolerance (a race whose estimates straddle a bucket edge)."""
        current: tuple[int, int] | None = None
        races: list[_RaceSeconds] = []
        for key in sorted(self._races):
            part = self._races[key]
            rider = key[:2]
            if rider != current:
                if current is not None:
                    yield current, races
                current, races = rider, []
            last = races[-1] if races else None
            if last is not None and part.earliest_ms - last.latest_ms <= RACE_START_TOLERANCE_MS:
                last.latest_ms = part.latest_ms
                last.seen |= part.seen
            else:
                races.append(_RaceSeconds(part.earliest_ms, part.latest_ms, part.seen))
        if current is not None:
            yield current, races

    def _on_its_shard(self, record: StreamRecord, racers: list[int]) -> bool | None:
        """Whether ``record`` sits where the rule puts it; None when the rule cannot tell."""
        shard = self._ranges.get(record.shard_id)
        if shard is None or self.shard_rule is ShardRule.SERVICE:
            return None
        if not record.partition_key and self.shard_rule is not ShardRule.BALANCED:
            # Written without a key: the stream chose its shard, no MD5 rule can tell.
            return None if self.shard_rule is ShardRule.MD5 else self._dealt_right(record, racers)
        if self.shard_rule is not ShardRule.BALANCED:
            key_hash = hash_key(record.partition_key)
            if shard.starting_hash_key <= key_hash <= shard.ending_hash_key:
                return True
            if self.shard_rule is ShardRule.MD5:
                return False
        return self._dealt_right(record, racers)

    def _dealt_right(self, record: StreamRecord, racers: list[int]) -> bool | None:
        """Whether ``record``'s riders were dealt to its shard; None when it cannot tell."""
        index = self._deal.get(record.shard_id)
        if index is None or not racers:
            return None
        count = len(self._deal)
        return all((racer - FIRST_RACER_ID) % count == index for racer in racers)

    def _messages_of(self, record: StreamRecord) -> Iterator[RideMessage]:
        """The valid messages in ``record``, counting each one and anything malformed."""
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
        else:
            self._aggregated += 1
            lines = [data for _key, data in parts]
        for line in lines:
            message = self._message(record, line)
            if message is not None:
                yield message

    def _message(self, record: StreamRecord, data: bytes) -> RideMessage | None:
        try:
            message = RideMessage.from_json(data)
        except MessageError as exc:
            self._bad(record, str(exc))
            return None
        if message.second > MAX_RACE_SECOND:
            self._bad(record, f"second {message.second} is past a day-long race")
            return None
        self._messages += 1
        window = self._windows.get(message.race_id)
        if window is None:
            window = self._windows[message.race_id] = _WindowCounts()
        window.messages += 1
        if message.uuid in self._uuids:
            # A copy: same race, same second. It must neither fill nor open a gap.
            self._duplicates += 1
            window.duplicates += 1
            return message
        self._uuids.add(message.uuid)
        start_ms = message.device_timestamp - (message.second - 1) * 1000
        key = (message.race_id, message.racer_id, start_ms // RACE_START_TOLERANCE_MS)
        race = self._races.get(key)
        if race is None:
            race = self._races[key] = _RaceSeconds(start_ms, start_ms)
        else:
            race.earliest_ms = min(race.earliest_ms, start_ms)
            race.latest_ms = max(race.latest_ms, start_ms)
        race.seen |= 1 << message.second
        return message

    def _bad(self, record: StreamRecord, reason: str) -> None:
        self._malformed += 1
        if len(self._malformed_examples) < MAX_EXAMPLES:
            self._malformed_examples.append(f"{record.shard_id} {record.sequence_number}: {reason}")


def _utc(epoch_ms: int) -> str:
    """``2026-11-26T19:50:00.000Z``."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
