"""The standings backend: each rider's best output per race and class, published back to riders.

What the original's Lambda functions and DynamoDB do, in one process:

- every ride message read from the stream counts once, by ``uuid``: a copy (a retried put, a
  shard read again after a restart) is counted as a duplicate and changes nothing;
- each rider's best ``round(output, 4)`` is kept per race (``raceId``) and class (``classId``);
- a race with news is published on the results topic at most once a second, and once more as
  soon as ``final`` messages arrive, in the original's results message (the agent's
  :func:`~alleycat_rider.core.standings.parse_results` reads it);
- with a map of client id to racer id, a message whose ``racerId`` is not its sender's (the
  ``clientId`` the rule stamped) is rejected and counted: one bike cannot ride as another.

State lives in SQLite (:class:`StandingsStore`): in memory by default, or in a file, which makes a
restarted backend carry on where it stopped: the same best outputs, the same counts, each shard
read on from the record after the last one it had stored. The state belongs to one stream, known
by its ARN and creation time (:meth:`Standings.follow`): a stream deleted and made again, or a new
local Kinesis server, is read from its beginning with a fresh state. Seen uuids expire after
:data:`DEDUP_WINDOW_MS` and races after :data:`RACE_KEEP_MS` without news, so memory and the
file stay flat over hours.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alleycat_rider.core.message import MessageError, RideEvent, RideMessage
from simulator.engine.kpl import AggregateError, deaggregate

#: The original's results topic.
DEFAULT_RESULTS_TOPIC = "alleycat-subscribe"
#: How long a message's uuid is remembered, by its ``deviceTimestamp`` (a race lasts 5 minutes).
DEDUP_WINDOW_MS = 10 * 60 * 1000
#: How long a race is kept after its last message.
RACE_KEEP_MS = 10 * 60 * 1000
#: A race is published at most this often, except when ``final`` messages arrive.
PUBLISH_INTERVAL_SECONDS = 1.0
#: Examples of rejected and malformed messages kept for the report.
MAX_EXAMPLES = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (uuid BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen (at);
CREATE TABLE IF NOT EXISTS best (
    race_id INTEGER, class_id INTEGER, racer_id INTEGER, output REAL NOT NULL,
    PRIMARY KEY (race_id, class_id, racer_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS races (
    race_id INTEGER, class_id INTEGER, last_ms INTEGER NOT NULL,
    PRIMARY KEY (race_id, class_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (shard_id TEXT PRIMARY KEY, sequence TEXT, done INTEGER);
CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stream (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
#: The tables that hold what was read from one stream (all but ``stream``).
_STATE_TABLES = ("seen", "best", "races", "shards", "counts")


@dataclass(slots=True)
class StandingsCounts:
    """What the backend has read, since its state began."""

    records: int = 0
    """Kinesis records read."""
    messages: int = 0
    """Ride messages in them, counted once each (KPL aggregates hold several)."""
    duplicates: int = 0
    rejected: int = 0
    """Messages whose racer is not their sender's (with a client map)."""
    malformed: int = 0
    published: int = 0
    """Results messages published."""

    def to_dict(self) -> dict[str, int]:
        return {
            "records": self.records,
            "messages": self.messages,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "malformed": self.malformed,
            "published": self.published,
        }


@dataclass(slots=True)
class Race:
    """One race of one class: the best output of each rider so far."""

    race_id: int
    class_id: int
    best: dict[int, float] = field(default_factory=dict)
    last_ms: int = 0
    news: bool = False
    final: bool = False
    published_at: float = float("-inf")


def results_message(race: Race, now_ms: int) -> bytes:
    """The original's results message for ``race``."""
    results = json.dumps({str(racer): out for racer, out in sorted(race.best.items())})
    message = {
        "msg": "results",
        "classId": str(race.class_id),
        "raceId": f"race-{race.race_id}",
        "ts": str(now_ms),
        "results": results,
    }
    return json.dumps(message, separators=(",", ":")).encode()


class StandingsStore:
    """The backend's state in SQLite: seen uuids, best outputs, shard positions, counts.

    Args:
        path: The database file; None keeps it in memory (lost when the process ends).
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Made on one thread, used by the reading thread only (the status reads no table).
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> tuple[StandingsCounts, dict[tuple[int, int], Race], dict[str, str], set[str]]:
        """Counts, races, shard positions and the shards read to their end."""
        counts = StandingsCounts()
        for name, value in self._db.execute("SELECT name, value FROM counts"):
            if hasattr(counts, name):
                setattr(counts, name, int(value))
        races: dict[tuple[int, int], Race] = {}
        for race_id, class_id, last_ms in self._db.execute("SELECT * FROM races"):
            races[race_id, class_id] = Race(race_id, class_id, last_ms=last_ms)
        for race_id, class_id, racer_id, output in self._db.execute("SELECT * FROM best"):
            race = races.get((race_id, class_id))
            if race is not None:
                race.best[racer_id] = output
        positions: dict[str, str] = {}
        done: set[str] = set()
        for shard_id, sequence, finished in self._db.execute("SELECT * FROM shards"):
            if finished:
                done.add(shard_id)
            elif sequence:
                positions[shard_id] = sequence
        return counts, races, positions, done

    def stream(self) -> str | None:
        """The stream the state was kept for (see :func:`~simulator.backend.tail.stream_identity`),
        or None if the state does not say."""
        row = self._db.execute("SELECT value FROM stream WHERE name = 'identity'").fetchone()
        return None if row is None else str(row[0])

    def is_empty(self) -> bool:
        """Whether nothing has been read into this state yet."""
        return all(
            self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
            for table in _STATE_TABLES
        )

    def start_over(self, identity: str) -> None:
        """Forget everything read, and keep what follows for the stream ``identity``."""
        db = self._db
        db.execute("BEGIN")
        for table in _STATE_TABLES:
            db.execute(f"DELETE FROM {table}")
        db.execute("INSERT OR REPLACE INTO stream VALUES ('identity', ?)", (identity,))
        db.execute("COMMIT")

    def first_sight(self, uuids: list[tuple[bytes, int]]) -> list[bool]:
        """For each ``(uuid, at)``: True if it is new (and remember it), False if seen before."""
        fresh = []
        for uuid, at in uuids:
            cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (uuid, at))
            fresh.append(cursor.rowcount == 1)
        return fresh

    def begin(self) -> None:
        self._db.execute("BEGIN")

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def commit(
        self,
        *,
        changed: Iterable[Race],
        bests: Iterable[tuple[int, int, int, float]],
        shard: tuple[str, str | None, bool] | None,
        counts: StandingsCounts,
    ) -> None:
        """Store one batch's changes and end its transaction."""
        db = self._db
        db.executemany("INSERT OR REPLACE INTO best VALUES (?, ?, ?, ?)", bests)
        db.executemany(
            "INSERT OR REPLACE INTO races VALUES (?, ?, ?)",
            [(r.race_id, r.class_id, r.last_ms) for r in changed],
        )
        if shard is not None:
            shard_id, sequence, done = shard
            db.execute(
                "INSERT OR REPLACE INTO shards VALUES (?, ?, ?)", (shard_id, sequence, int(done))
            )
        db.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?)", counts.to_dict().items())
        db.execute("COMMIT")

    def expire(self, *, seen_before_ms: int, races: Iterable[tuple[int, int]]) -> None:
        """Forget uuids seen before ``seen_before_ms`` and the given races."""
        db = self._db
        db.execute("BEGIN")
        db.execute("DELETE FROM seen WHERE at < ?", (seen_before_ms,))
        for race_id, class_id in races:
            db.execute("DELETE FROM best WHERE race_id = ? AND class_id = ?", (race_id, class_id))
            db.execute("DELETE FROM races WHERE race_id = ? AND class_id = ?", (race_id, class_id))
        db.execute("COMMIT")

    def remembered(self) -> int:
        """Uuids remembered now."""
        return int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def load_client_map(path: Path) -> dict[str, int]:
    """A JSON object mapping client ids to racer ids, e.g. ``{"bike-1": 101}``.

    Raises:
        ValueError: the file is not such an object (the message says what is wrong).
    """
    try:
        obj = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the client map {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ValueError(f"the client map {path} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f'the client map {path} must be a JSON object: {{"bike-1": 101, ...}}')
    mapping: dict[str, int] = {}
    for client_id, racer in obj.items():
        if isinstance(racer, bool) or not isinstance(racer, int | str) or not str(racer).isdigit():
            raise ValueError(f"the client map {path} gives {client_id!r} a racer id of {racer!r}")
        mapping[str(client_id)] = int(racer)
    return mapping


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """A record as read from a shard."""

    sequence_number: str
    data: bytes


class Standings:
    """Keeps the leaderboards and decides what to publish; see the module doc.

    Args:
        publish: Sends one results message (QoS 0); must not block for long.
        store: Where the state is kept.
        client_map: Client id -> racer id; None accepts every message.
        monotonic: The clock the publish rate is measured on.
        wall_ms: Epoch milliseconds, for ``ts`` and expiry.
    """

    def __init__(
        self,
        publish: Callable[[bytes], None],
        *,
        store: StandingsStore | None = None,
        client_map: Mapping[str, int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._publish = publish
        self.store = store or StandingsStore()
        self._client_map = client_map
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self.counts, self.races, self.positions, self.done_shards = self.store.load()
        self.rejected_examples: list[str] = []
        self.malformed_examples: list[str] = []
        self.lag_ms: int | None = None
        """How far the reading is behind the stream's tip; None until every shard answered."""

    def follow(self, identity: str) -> str | None:
        """Keep the state for the stream ``identity``; start over if it was kept for another.

        Returns the stream a dropped state was read from (``"an unnamed stream"`` for a state
        that does not say), or None when nothing was dropped. After a drop the stream must be
        read from its beginning.
        """
        store = self.store
        kept_for = store.stream()
        if kept_for == identity:
            return None
        dropped = kept_for is not None or not store.is_empty()
        store.start_over(identity)
        self.counts, self.races, self.positions, self.done_shards = store.load()
        return (kept_for or "an unnamed stream") if dropped else None

    def add_records(self, shard_id: str, records: list[ReadRecord], *, done: bool = False) -> None:
        """Take one GetRecords page of ``shard_id``; ``done``: the shard is read to its end."""
        parsed: list[tuple[dict[str, Any], RideMessage]] = []
        for record in records:
            parsed.extend(self._messages(record))
        store = self.store
        store.begin()
        try:
            fresh = store.first_sight(
                [(bytes.fromhex(m.uuid.replace("-", "")), m.device_timestamp) for _o, m in parsed]
            )
            changed: dict[tuple[int, int], Race] = {}
            bests: list[tuple[int, int, int, float]] = []
            for (obj, message), new in zip(parsed, fresh, strict=True):
                self.counts.messages += 1
                if not new:
                    self.counts.duplicates += 1
                    continue
                if not self._accepts(obj, message):
                    continue
                race = self._race(message)
                changed[race.race_id, race.class_id] = race
                out = round(message.output, 4)
                if out > race.best.get(message.racer_id, float("-inf")):
                    race.best[message.racer_id] = out
                    race.news = True
                    bests.append((race.race_id, race.class_id, message.racer_id, out))
                if message.event is RideEvent.FINAL:
                    race.final = True
            self.counts.records += len(records)
            last = records[-1].sequence_number if records else self.positions.get(shard_id)
            if last is not None:
                self.positions[shard_id] = last
            if done:
                self.done_shards.add(shard_id)
            store.commit(
                changed=changed.values(),
                bests=bests,
                shard=(shard_id, last, done) if last is not None or done else None,
                counts=self.counts,
            )
        except BaseException:
            store.rollback()
            raise

    def publish_due(self) -> int:
        """Publish every race with news whose last message is a second old, or that has a
        ``final`` message; return how many were published."""
        now = self._monotonic()
        now_ms = self._wall_ms()
        published = 0
        for race in self.races.values():
            if not race.news and not race.final:
                continue
            if race.final or now - race.published_at >= PUBLISH_INTERVAL_SECONDS:
                self._publish(results_message(race, now_ms))
                race.news = race.final = False
                race.published_at = now
                published += 1
        self.counts.published += published
        return published

    def expire(self) -> None:
        """Forget races without news for :data:`RACE_KEEP_MS` and uuids past the window."""
        now_ms = self._wall_ms()
        old = [key for key, race in self.races.items() if race.last_ms < now_ms - RACE_KEEP_MS]
        for key in old:
            del self.races[key]
        self.store.expire(seen_before_ms=now_ms - DEDUP_WINDOW_MS, races=old)

    def riders(self) -> int:
        """Riders with a result in a race kept now."""
        return len({racer for race in self.races.values() for racer in race.best})

    def report(self) -> dict[str, Any]:
        """Everything counted, for ``--json`` and the status line."""
        return {
            **self.counts.to_dict(),
            "races": len(self.races),
            "riders": self.riders(),
            "lag_ms": self.lag_ms,
            "rejected_examples": list(self.rejected_examples),
            "malformed_examples": list(self.malformed_examples),
        }

    def _race(self, message: RideMessage) -> Race:
        key = (message.race_id, message.class_id)
        race = self.races.get(key)
        if race is None:
            race = self.races[key] = Race(message.race_id, message.class_id)
        race.last_ms = max(race.last_ms, self._wall_ms())
        return race

    def _accepts(self, obj: dict[str, Any], message: RideMessage) -> bool:
        if self._client_map is None:
            return True
        client_id = obj.get("clientId")
        expected = self._client_map.get(client_id) if isinstance(client_id, str) else None
        if expected == message.racer_id:
            return True
        self.counts.rejected += 1
        if len(self.rejected_examples) < MAX_EXAMPLES:
            sender = (
                "an unknown sender" if expected is None else f"{client_id!r} (racer {expected})"
            )
            self.rejected_examples.append(
                f"racer {message.racer_id} sent by {sender}: {client_id!r} is not that racer's"
            )
        return False

    def _messages(self, record: ReadRecord) -> Iterable[tuple[dict[str, Any], RideMessage]]:
        try:
            parts = deaggregate(record.data)
        except AggregateError as exc:
            self._malformed(record, str(exc))
            return
        lines = (
            [line for line in record.data.split(b"\n") if line.strip()]
            if parts is None
            else [data for _key, data in parts]
        )
        if not lines:
            self._malformed(record, "empty record")
        for line in lines:
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise MessageError("not a JSON object")
                yield obj, RideMessage.from_dict(obj)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                self._malformed(record, str(exc))

    def _malformed(self, record: ReadRecord, reason: str) -> None:
        self.counts.malformed += 1
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append(f"{record.sequence_number}: {reason[:200]}")
