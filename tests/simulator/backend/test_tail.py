"""Following a real stream (kinesalite) across a reshard: every record read once, in order."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.core.message import RideEvent, RideMessage
from simulator.backend import tail as tail_module
from simulator.backend.services import read_once, tail_for
from simulator.backend.standings import Standings, StandingsStore
from simulator.backend.tail import StreamTail
from tests.servers.kinesis import create_stream


def put(client: Any, stream: str, values: range) -> None:
    client.put_records(
        StreamName=stream,
        Records=[{"Data": str(v).encode(), "PartitionKey": f"k{v}"} for v in values],
    )


def read_all(tail: StreamTail, until: int, timeout: float = 20.0) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < until and time.monotonic() < deadline:
        for page in tail.poll():
            got += [(page.shard_id, r.data) for r in page.records]
        time.sleep(0.05)
    return got


def test_the_tail_reads_new_shards_after_a_split_and_finishes_the_parent(
    kinesis_client: Any, stream_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail_module, "LIST_EVERY", 0.2)
    create_stream(kinesis_client, stream_name, 1)
    put(kinesis_client, stream_name, range(50))
    tail = StreamTail(kinesis_client, stream_name, start="TRIM_HORIZON", warn=print)
    before = read_all(tail, 50)
    assert sorted(int(data) for _shard, data in before) == list(range(50))

    kinesis_client.split_shard(
        StreamName=stream_name,
        ShardToSplit="shardId-000000000000",
        NewStartingHashKey=str(2**127),
    )
    kinesis_client.get_waiter("stream_exists").wait(
        StreamName=stream_name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    put(kinesis_client, stream_name, range(50, 150))
    after = read_all(tail, 100)
    assert sorted(int(data) for _shard, data in after) == list(range(50, 150))
    assert {shard for shard, _data in after} == {"shardId-000000000001", "shardId-000000000002"}
    deadline = time.monotonic() + 5
    while "shardId-000000000000" not in tail._done and time.monotonic() < deadline:
        assert all(not page.records for page in tail.poll())  # nothing read twice
        time.sleep(0.05)
    assert "shardId-000000000000" in tail._done  # read to its end, never read again
    assert tail.shards == 2


def test_latest_skips_what_was_there_and_stored_positions_carry_on(
    kinesis_client: Any, stream_name: str
) -> None:
    create_stream(kinesis_client, stream_name, 1)
    put(kinesis_client, stream_name, range(10))
    latest = StreamTail(kinesis_client, stream_name, start="LATEST")
    assert read_all(latest, 1, timeout=1.5) == []  # only what comes after the start
    put(kinesis_client, stream_name, range(10, 15))
    seen = read_all(latest, 5)
    assert [int(d) for _s, d in seen] == list(range(10, 15))

    first = kinesis_client.get_records(
        ShardIterator=kinesis_client.get_shard_iterator(
            StreamName=stream_name, ShardId="shardId-000000000000",
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
    )["Records"]  # fmt: skip
    after_fourth = {"shardId-000000000000": first[3]["SequenceNumber"]}
    resumed = StreamTail(kinesis_client, stream_name, start="LATEST", positions=after_fourth)
    assert [int(d) for _s, d in read_all(resumed, 11)] == list(range(4, 15))


def ride_record(n: int) -> bytes:
    """A ride message of racer 100 + ``n``."""
    return RideMessage(
        uuid=str(uuid.UUID(int=n + 1, version=4)), event=RideEvent.UPDATE,
        device_timestamp=1_764_186_600_000 + n * 1000, second=n + 1, race_id=5_880_622,
        name=f"r{n}", racer_id=100 + n, class_id=1, cadence=80, resistance=50,
    ).to_json()  # fmt: skip


def read_standings(backend: Standings, tail: StreamTail, records: int) -> None:
    deadline = time.monotonic() + 20
    while backend.counts.records != records and time.monotonic() < deadline:
        read_once(backend, tail)
        time.sleep(0.05)


def make_again(client: Any, stream: str) -> None:
    """Delete the stream and make it again, as a restarted local Kinesis server has it."""
    client.delete_stream(StreamName=stream)
    client.get_waiter("stream_not_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200}
    )
    time.sleep(1.1)  # kinesalite's creation times are whole seconds
    create_stream(client, stream, 1)


def put_rides(client: Any, stream: str, riders: range) -> None:
    client.put_records(
        StreamName=stream,
        Records=[{"Data": ride_record(n), "PartitionKey": f"k{n}"} for n in riders],
    )


def test_standings_kept_for_a_stream_made_again_start_over_from_its_beginning(
    kinesis_client: Any, stream_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail_module, "LIST_EVERY", 0.2)
    state = tmp_path / "standings.db"
    said: list[str] = []

    def restart(start: str) -> tuple[Standings, StreamTail]:
        backend = Standings(lambda _p: None, store=StandingsStore(state))
        tail = tail_for(backend, kinesis_client, stream_name, start=start, say=said.append,
                        where=str(state))  # fmt: skip
        return backend, tail

    create_stream(kinesis_client, stream_name, 1)
    put_rides(kinesis_client, stream_name, range(30))
    first, tail = restart("TRIM_HORIZON")
    read_standings(first, tail, 30)
    assert first.counts.records == 30 and first.riders() == 30
    assert tail.lag_ms is not None
    first.store.close()
    assert said == []  # a new state for its first stream: nothing to say

    make_again(kinesis_client, stream_name)
    put_rides(kinesis_client, stream_name, range(5))
    again, tail = restart("LATEST")
    assert tail.lag_ms is None  # nothing read yet: not reported as up to date
    read_standings(again, tail, 5)
    assert len(said) == 1 and "starting over from the stream's beginning" in said[0]
    assert str(state) in said[0]
    # Every record of the new stream, from its first, and none of the old stream's riders.
    assert again.counts.records == again.counts.messages == 5
    assert again.counts.duplicates == 0 and again.riders() == 5
    again.store.close()

    # Restarted on the same stream, it carries on: nothing said, nothing read twice.
    kept, tail = restart("TRIM_HORIZON")
    assert len(said) == 1 and kept.counts.records == 5
    put_rides(kinesis_client, stream_name, range(9, 10))
    read_standings(kept, tail, 6)
    assert kept.counts.records == 6 and kept.counts.duplicates == 0

    # Made again while the standings read it: they start over at the next listing.
    make_again(kinesis_client, stream_name)
    put_rides(kinesis_client, stream_name, range(20, 23))
    read_standings(kept, tail, 3)
    assert len(said) == 2 and "was made again" in said[1]
    assert kept.counts.records == 3 and kept.riders() == 3
    kept.store.close()
