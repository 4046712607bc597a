"""The standings backend: best output per rider, race and class, each message once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from alleycat_rider.core.message import RideEvent, RideMessage
from alleycat_rider.core.standings import parse_results, standings_for
from simulator.backend.standings import (
    DEDUP_WINDOW_MS,
    RACE_KEEP_MS,
    ReadRecord,
    Standings,
    StandingsStore,
)
from simulator.engine.kpl import new_aggregate

NOW_MS = 1_764_186_600_000
RACE = NOW_MS // 300_000


class Clock:
    def __init__(self) -> None:
        self.seconds = 50.0
        self.ms = NOW_MS

    def monotonic(self) -> float:
        return self.seconds

    def wall_ms(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.ms += int(seconds * 1000)


def ride(
    racer: int,
    cadence: float,
    resistance: float,
    *,
    second: int = 1,
    class_id: int = 1,
    event: RideEvent = RideEvent.UPDATE,
    uuid_: str | None = None,
    client_id: str | None = None,
) -> bytes:
    message = RideMessage(
        uuid=uuid_ or str(uuid.uuid4()),
        event=event,
        device_timestamp=NOW_MS + second * 1000,
        second=second,
        race_id=RACE,
        name=f"r{racer}",
        racer_id=racer,
        class_id=class_id,
        cadence=cadence,
        resistance=resistance,
    )
    if client_id is None:
        return message.to_json()
    return json.dumps({**message.to_dict(), "clientId": client_id}).encode()


class Backend:
    def __init__(self, tmp_path: Path | None = None, **kwargs: object) -> None:
        self.clock = Clock()
        self.published: list[bytes] = []
        self.store = StandingsStore(None if tmp_path is None else tmp_path / "state.db")
        self.standings = Standings(
            self.published.append,
            store=self.store,
            monotonic=self.clock.monotonic,
            wall_ms=self.clock.wall_ms,
            **kwargs,  # type: ignore[arg-type]
        )
        self._sequence = 0

    def read(self, *payloads: bytes, shard: str = "shardId-000000000000") -> None:
        records = []
        for payload in payloads:
            self._sequence += 1
            records.append(ReadRecord(f"{self._sequence:020d}", payload))
        self.standings.add_records(shard, records)


@pytest.fixture
def backend() -> Iterator[Backend]:
    made = Backend()
    yield made
    made.store.close()


def test_each_riders_best_output_per_race_is_what_riders_are_placed_by(backend: Backend) -> None:
    backend.read(ride(101, 80, 50), ride(102, 90, 60), ride(101, 60, 40, second=2))
    assert backend.standings.publish_due() == 1
    (payload,) = backend.published
    race_id, class_id, ts, outputs = parse_results(payload)
    assert (race_id, class_id, ts) == (f"race-{RACE}", 1, NOW_MS)
    assert outputs == {"101": round((80 + 35) * (50 + 65) / 100, 4), "102": 156.25}
    mine = standings_for(payload, racer_id=101, class_id=1)
    assert mine is not None and mine.place == 2 and mine.riders == 2
    theirs = standings_for(payload, racer_id=102, class_id=1)
    assert theirs is not None and theirs.place == 1


def test_classes_are_separate_races(backend: Backend) -> None:
    backend.read(ride(101, 80, 50, class_id=1), ride(201, 70, 50, class_id=2))
    assert backend.standings.publish_due() == 2
    classes = sorted(parse_results(p)[1] for p in backend.published)
    assert classes == [1, 2]


def test_a_copy_of_a_message_is_a_duplicate_and_changes_nothing(backend: Backend) -> None:
    same = str(uuid.uuid4())
    backend.read(ride(101, 80, 50, uuid_=same))
    backend.read(ride(101, 80, 50, uuid_=same), ride(101, 80, 50, uuid_=same))
    report = backend.standings.report()
    assert report["messages"] == 3 and report["duplicates"] == 2 and report["records"] == 3
    # A "copy" claiming a higher output under a seen uuid is a copy all the same.
    backend.read(ride(101, 200, 200, uuid_=same))
    backend.standings.publish_due()
    assert parse_results(backend.published[-1])[3] == {"101": 132.25}


def test_a_race_is_published_at_most_once_a_second_but_at_once_when_final(
    backend: Backend,
) -> None:
    backend.read(ride(101, 60, 50))
    assert backend.standings.publish_due() == 1
    backend.read(ride(101, 70, 50, second=2))
    backend.clock.advance(0.5)
    assert backend.standings.publish_due() == 0  # news, but published half a second ago
    backend.clock.advance(0.5)
    assert backend.standings.publish_due() == 1
    assert backend.standings.publish_due() == 0  # no news: nothing to send
    backend.read(ride(101, 50, 50, second=3, event=RideEvent.FINAL))
    backend.clock.advance(0.1)
    assert backend.standings.publish_due() == 1  # final: the last word, without waiting
    assert backend.standings.counts.published == 3


def test_a_rider_riding_as_another_is_rejected_with_a_client_map() -> None:
    made = Backend(client_map={"bike-1": 101, "bike-2": 102})
    made.read(
        ride(101, 80, 50, client_id="bike-1"),
        ride(101, 99, 99, client_id="bike-2"),  # bike-2 claims to be racer 101
        ride(103, 99, 99, client_id="bike-3"),  # not a known bike
        ride(102, 99, 99),  # no sender stamped at all
    )
    report = made.standings.report()
    assert report["rejected"] == 3
    made.standings.publish_due()
    assert parse_results(made.published[-1])[3] == {"101": 132.25}
    assert "racer 101 sent by 'bike-2' (racer 102)" in report["rejected_examples"][0]
    made.store.close()


def test_garbage_and_aggregates(backend: Backend) -> None:
    aggregate = new_aggregate()
    for racer in (101, 102):
        aggregate.add_user_record(str(racer), ride(racer, 80, 50))
    kpl = aggregate.get_contents()[2]
    buffered = ride(103, 80, 50) + b"\n" + ride(104, 80, 50) + b"\n"
    backend.read(kpl, buffered, b"\x00\xff not json", b"[1, 2]", b"")
    report = backend.standings.report()
    assert report["messages"] == 4 and report["malformed"] == 3 and report["records"] == 5
    backend.standings.publish_due()
    assert set(parse_results(backend.published[-1])[3]) == {"101", "102", "103", "104"}


def test_a_restart_on_the_same_state_carries_on(tmp_path: Path) -> None:
    first = Backend(tmp_path)
    seen = str(uuid.uuid4())
    first.read(ride(101, 80, 50, uuid_=seen), ride(102, 60, 50))
    first.standings.publish_due()
    first.store.close()

    second = Backend(tmp_path)
    assert second.standings.positions == {"shardId-000000000000": f"{2:020d}"}
    assert second.standings.counts.messages == 2
    second.read(ride(101, 80, 50, uuid_=seen), ride(102, 70, 50, second=2))
    report = second.standings.report()
    assert report["messages"] == 4 and report["duplicates"] == 1
    second.standings.publish_due()
    assert parse_results(second.published[-1])[3] == {"101": 132.25, "102": 120.75}
    second.store.close()


def test_old_races_and_uuids_expire_so_memory_stays_flat(backend: Backend) -> None:
    backend.read(ride(101, 80, 50))
    assert backend.store.remembered() == 1
    backend.clock.advance((max(RACE_KEEP_MS, DEDUP_WINDOW_MS) + 60_000) / 1000)
    backend.standings.expire()
    assert backend.standings.races == {}
    assert backend.store.remembered() == 0


def test_records_read_without_a_partition_key_count_like_any_other(
    backend: Backend, aws_test_env: None
) -> None:
    # A stream that spreads records itself (auto) returns them with no PartitionKey.
    from botocore.stub import Stubber

    from simulator.backend.tail import StreamTail
    from simulator.sinks.kinesis import make_client

    client = make_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    shard = {
        "ShardId": "shardId-000000000000",
        "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
    }
    tail = StreamTail(client, "rides", start="TRIM_HORIZON")
    with Stubber(client) as stub:
        stub.add_response("list_shards", {"Shards": [shard]})
        stub.add_response("list_shards", {"Shards": [shard]})
        stub.add_response("get_shard_iterator", {"ShardIterator": "it-1"})
        records = [
            {"SequenceNumber": "1", "Data": ride(7, 80, 50)},
            {"SequenceNumber": "2", "Data": ride(8, 90, 60, second=2)},
        ]
        stub.add_response(
            "get_records",
            {"Records": records, "NextShardIterator": "it-2", "MillisBehindLatest": 0},
        )
        [page] = tail.poll()
        stub.assert_no_pending_responses()
    client.close()
    backend.standings.add_records(page.shard_id, page.records)
    assert backend.standings.counts.messages == 2
    assert backend.standings.riders() == 2


def test_the_state_belongs_to_the_stream_it_was_kept_for(tmp_path: Path) -> None:
    made = Backend(tmp_path)
    assert made.standings.follow("arn:stream/alleycat created 1") is None  # a new state
    made.read(ride(101, 80, 50))
    assert made.standings.follow("arn:stream/alleycat created 1") is None  # the same stream
    assert made.standings.counts.records == 1
    dropped = made.standings.follow("arn:stream/alleycat created 2")
    assert dropped == "arn:stream/alleycat created 1"
    assert made.standings.counts.records == 0 and made.standings.riders() == 0
    assert made.standings.positions == {} and made.store.is_empty()
    made.store.close()


def test_a_state_that_names_no_stream_is_dropped_when_it_holds_anything(tmp_path: Path) -> None:
    old = Backend(tmp_path)  # as kept before states named their stream
    old.read(ride(101, 80, 50))
    old.store.close()
    again = Backend(tmp_path)
    assert again.standings.follow("arn:stream/alleycat created 2") == "an unnamed stream"
    assert again.standings.counts.records == 0
    again.store.close()
