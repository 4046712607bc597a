"""``alleycat simulate`` with capacity modes, service-managed distribution and a ramp."""

import json

import pytest
from click.testing import CliRunner

from alleycat.cli import cli


def _simulate(*args):
    return CliRunner().invoke(cli, ["simulate", "--fast", "--seed", "1", *args])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--partition-key", "auto"], "--partition-key auto needs an on-demand stream: add "
         "--capacity on-demand"),
        (["--partition-key", "auto", "--capacity", "on-demand", "--batching", "kpl"],
         "--partition-key auto cannot be used with --batching kpl"),
        (["--partition-key", "auto", "--capacity", "on-demand", "--batching", "buffered:5"],
         "--partition-key auto cannot be used with --batching buffered:5"),
        (["--capacity", "on-demand", "--warm-throughput", "8"],
         "--warm-throughput needs --capacity on-demand-advantage"),
        (["--partition-key", "auto", "--stream", "rides", "--create-stream"],
         "--partition-key auto needs an on-demand stream"),
        (["--capacity", "on-demand", "--shards", "8"],
         "--shards sizes a provisioned stream; an on-demand one starts at --on-demand-shards"),
        (["--capacity", "on-demand-advantage", "--shards", "4", "--stream", "rides",
          "--create-stream"], "--shards sizes a provisioned stream"),
    ],
)  # fmt: skip
def test_a_capacity_mode_that_cannot_work_is_a_one_line_usage_error(args, says):
    result = _simulate(*args)
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output


def test_on_demand_splits_and_the_summary_says_when():
    result = _simulate(
        "--riders", "3000", "--duration", "30", "--capacity", "on-demand",
        "--scale-out-seconds", "5", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["capacity"] == "on-demand"
    # 3,000 records/s asks for twice that: 6 shards, 5 s after the first full second.
    assert summary["scale_outs"] == [{"at_second": 7, "open_shards": 6}]
    assert summary["order_kept"] is True
    assert summary["generated"] == summary["delivered"] == 90_000
    # Two of the four split: their children are shards 4 to 7; all eight took records.
    ids = {s["shard_id"] for s in summary["shards"] if s["records"]}
    assert ids == {f"shardId-{i:012d}" for i in range(8)}


def test_auto_on_demand_delivers_everything_spread_evenly_and_says_order_is_lost():
    result = _simulate(
        "--riders", "400", "--duration", "10", "--capacity", "on-demand",
        "--partition-key", "auto", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["order_kept"] is False
    assert summary["generated"] == summary["delivered"] == 4000
    assert [s["records"] for s in summary["shards"]] == [1000] * 4
    table = _simulate(
        "--riders", "40", "--duration", "2", "--capacity", "on-demand", "--partition-key", "auto"
    )
    assert "not kept: the stream spreads records itself" in table.output


def test_advantage_warm_throughput_starts_with_enough_shards():
    result = _simulate(
        "--riders", "100", "--duration", "3", "--capacity", "on-demand-advantage",
        "--warm-throughput", "10", "--partition-key", "racer", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["shards"]) == 10


def test_a_ramp_spreads_the_start_so_fewer_messages_are_sent():
    result = _simulate("--riders", "100", "--duration", "10", "--ramp", "10", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    # Rider i of 100 joins in second i // 10: 10 riders each second, each riding to the end.
    assert summary["generated"] == summary["delivered"] == sum(10 * (10 - s) for s in range(10))


def test_a_ramped_run_rode_its_whole_duration_and_one_stopped_early_says_how_far():
    from simulator.cli import ridden_seconds

    # 10 riders joining over 5 s, 8 s long: 2 + 4 + 6 + 8 + 10 + 10 + 10 + 10 = 60 messages.
    assert ridden_seconds(60, riders=10, duration=8, ramp=5) == 8
    assert ridden_seconds(20, riders=10, duration=8, ramp=5) == 4  # 2 + 4 + 6 + 8
    assert ridden_seconds(19, riders=10, duration=8, ramp=5) == 3
    assert ridden_seconds(3000, riders=100, duration=300, ramp=0) == 30
    table = _simulate("--riders", "10", "--duration", "8", "--ramp", "5")
    assert "10 × 8 " in table.output and " of 8" not in table.output
