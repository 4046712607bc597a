"""Following a real stream (kinesalite) across a reshard: every record read once, in order."""

from __future__ import annotations

import time
from typing import Any

import pytest

from simulator.backend import tail as tail_module
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
