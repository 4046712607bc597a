"""The pure parts of the Locust integration: dealing riders, keys, summing workers, the command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from simulator.distributed import cli as locust_cli
from simulator.distributed.riders import (
    RIDERS_PER_WORKER,
    GroupSettings,
    RiderGroups,
    balanced_key,
    first_rider,
)
from simulator.distributed.summary import merge_reports, worker_report, workers_line
from simulator.engine.batching import Record
from simulator.engine.counters import RunStats
from simulator.engine.keys import PartitionKeyStrategy
from simulator.engine.shards import LocalStream, ShardRouter

SHARDS = LocalStream(4).describe().shards


def ride(groups: RiderGroups, until: float) -> list[Record]:
    out: list[Record] = []
    groups.emit_until(until, out, 1_000_000)
    return out


def racers(records: list[Record]) -> set[int]:
    return {json.loads(r.data)["racerId"] for r in records}


def test_riders_of_different_workers_never_share_a_racer_id():
    settings = GroupSettings(riders_per_user=5)
    seen: list[set[int]] = []
    for worker in (0, 1, 2):
        groups = RiderGroups(settings, worker, SHARDS)
        for _ in range(3):
            groups.join(1000.0)
        seen.append(racers(ride(groups, 1002.0)))
    assert [len(s) for s in seen] == [15, 15, 15]
    assert not (seen[0] & seen[1] or seen[1] & seen[2] or seen[0] & seen[2])
    assert min(seen[1]) == 100 + RIDERS_PER_WORKER


def test_a_worker_refuses_riders_beyond_its_block():
    with pytest.raises(ValueError, match="at most"):
        first_rider(0, RIDERS_PER_WORKER // 10, 10)


def test_balanced_keys_put_each_racer_on_the_shard_verify_expects_on_any_worker():
    router = ShardRouter(SHARDS)
    for worker in (0, 3):
        groups = RiderGroups(
            GroupSettings(riders_per_user=7, strategy=PartitionKeyStrategy.BALANCED),
            worker,
            SHARDS,
        )
        groups.join(50.0)
        groups.join(50.0)
        for record in ride(groups, 52.0):
            racer = json.loads(record.data)["racerId"]
            shard = router.index_for(record.partition_key, record.explicit_hash_key)
            assert shard == (racer - 100) % len(SHARDS)
            assert (record.partition_key, record.explicit_hash_key) == balanced_key(
                racer - 100, SHARDS
            )


def test_riders_of_a_user_that_left_send_nothing_more():
    groups = RiderGroups(GroupSettings(riders_per_user=2), 0, SHARDS)
    stays, leaves = groups.join(10.0), groups.join(10.0)
    first = ride(groups, 11.0)
    groups.leave(leaves)
    later = ride(groups, 14.0)
    assert len(racers(first)) == 4
    assert racers(later) == {100, 101}
    assert stays == 0 and groups.riders == 2 and groups.peak_riders == 4
    groups.close()
    assert groups.done and ride(groups, 20.0) == []


def test_a_seed_makes_a_rider_ride_the_same_way():
    def readings(seed: int) -> list[tuple[float, float]]:
        groups = RiderGroups(GroupSettings(riders_per_user=3, seed=seed), 1, SHARDS)
        groups.join(0.0)
        return [
            (m["cadence"], m["resistance"])
            for m in (json.loads(r.data) for r in ride(groups, 30.0))
        ]

    assert readings(4) == readings(4)
    assert readings(4) != readings(5)


def stats_with(generated: int, delivered: list[tuple[float, float]], throttled: int) -> RunStats:
    stats = RunStats(["shardId-000000000000"])
    stats.record_generated(0.0, generated)
    records = [Record(b"x" * 10, "k", None, made) for made, _ in delivered]
    for record, (_, at) in zip(records, delivered, strict=True):
        stats.record_delivered([record], ["shardId-000000000000"], at)
    stats.throttled = throttled
    stats.batches = len(delivered)
    stats.batch_records = len(delivered)
    return stats


def test_the_master_sums_workers_and_counts_what_a_dead_one_held_as_lost():
    one = stats_with(3, [(0.0, 0.010), (0.0, 0.020), (0.0, 0.030)], throttled=2)
    two = stats_with(5, [(0.0, 0.100), (0.0, 0.200)], throttled=1)
    merged = merge_reports(
        [
            worker_report(one, worker_index=0, pending=0, riders=3, final=True),
            worker_report(two, worker_index=1, pending=3, riders=5, final=False),
        ]
    )
    assert merged["generated"] == 8
    assert merged["delivered"] == 5
    assert merged["throttled"] == 3
    assert merged["lost"] == 3
    assert merged["generated"] == merged["delivered"] + merged["dropped"] + merged["lost"]
    assert merged["riders"] == 8
    # Percentiles of the merged histogram, not an average of each worker's.
    assert merged["latency_ms"]["p50"] == 30.0
    assert merged["latency_ms"]["max"] == 200.0
    assert merged["shards"] == [
        {
            "shard_id": "shardId-000000000000",
            "records": 5,
            "bytes": 55,
            "peak_records_per_s": 5,
            "peak_bytes_per_s": 55,
        }
    ]
    assert [(w["worker_index"], w["finished"], w["lost"]) for w in merged["workers"]] == [
        (0, True, 0),
        (1, False, 3),
    ]


def test_locust_runs_our_locustfile_beside_any_the_user_names():
    argv = locust_cli.locust_argv(["-f", "race-start,my_shape.py", "--headless", "-u", "5"])
    assert argv[1:4] == ["-m", "locust", "-f"]
    files = argv[4].split(",")
    assert files == [
        str(locust_cli.LOCUSTFILE),
        str(locust_cli.SHAPES["race-start"]),
        "my_shape.py",
    ]
    assert argv[5:] == ["--headless", "-u", "5"]
    assert locust_cli.LOCUSTFILE.is_file() and locust_cli.SHAPES["race-start"].is_file()


def test_without_locust_the_command_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(locust_cli, "locust_installed", lambda: False)
    result = CliRunner().invoke(locust_cli.locust, ["--headless"])
    assert result.exit_code == 2
    assert result.output == "alleycat locust needs Locust: pip install 'alleycat[locust]'\n"


def test_help_lists_our_options_before_locusts_own():
    text = locust_cli.options_help()
    for option in ("--stream", "--partition-key", "--riders-per-user", "--aws-profile"):
        assert option in text


def test_options_out_of_range_are_refused_before_anyone_rides():
    import argparse

    from simulator.distributed.options import RunOptions, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ValueError, match="classes"):
        RunOptions.from_parsed(parser.parse_args(["--classes", "9"]))
    with pytest.raises(ValueError, match="scheme"):
        RunOptions.from_parsed(parser.parse_args(["--endpoint-url", "127.0.0.1:4567"]))
    with pytest.raises(ValueError, match="--record-ttl must be a finite number > 0, not nan"):
        RunOptions.from_parsed(parser.parse_args(["--record-ttl", "nan"]))
    with pytest.raises(ValueError, match="--flush-interval must be a finite number >= 0"):
        RunOptions.from_parsed(parser.parse_args(["--flush-interval", "inf"]))
    options = RunOptions.from_parsed(parser.parse_args(["--seed", "3", "--record-ttl", "5"]))
    assert options.groups.seed == 3 and options.producer.record_ttl == 5


def test_help_shows_our_options_then_locusts_and_returns():
    result = CliRunner().invoke(locust_cli.locust, ["--help"])
    assert result.exit_code == 0
    ours, theirs = result.output.index("--riders-per-user"), result.output.index("--processes")
    assert ours < theirs


def test_the_workers_line_speaks_of_missing_workers_only_when_some_are() -> None:
    finished = {"finished": True}
    summary = {"workers": [finished, finished], "messages_delivered": 12_000, "lost": 0}
    assert workers_line(summary) == "2 workers; messages delivered: 12,000"
    summary = {"workers": [finished, {"finished": False}], "messages_delivered": 9_000, "lost": 300}
    assert workers_line(summary) == (
        "2 workers; messages delivered: 9,000; lost with 1 missing worker: 300"
    )
