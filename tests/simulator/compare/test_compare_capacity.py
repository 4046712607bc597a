"""``alleycat compare --capacity``: modes side by side, their costs by hand, a race start."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from simulator.compare.capacity import compare_capacities, parse_capacities
from simulator.compare.cli import compare
from simulator.compare.costs import capacity_cost
from simulator.compare.replay import StreamSpec, Workload
from simulator.engine.capacity import CapacityMode, OnDemandPolicy
from simulator.engine.keys import PartitionKeyStrategy

# 10 riders × 60 s: 600 records, each under 1 KB (one billed KB, one PUT payload unit).
# A month is 2,628,000 s: the run is scaled 43,800 times.
PROVISIONED_4 = 4 * 730 * 0.015 + 600 * 43_800 / 1e6 * 0.014  # 43.8 + 0.36792
ON_DEMAND = 730 * 0.04 + 600 * 1024 * 43_800 / 1024**3 * 0.08  # 29.2 + 2.005005
ADVANTAGE = 25 * 2_628_000 / 1024 * 0.032  # the 25 MiB/s floor: 64,160.16 GB at $0.032


def test_each_modes_cost_matches_a_hand_calculation():
    def cost(mode):
        return capacity_cost(
            mode, shards=4, seconds=60, put_payload_units=600, billed_kilobytes=600
        )

    provisioned = cost("provisioned")
    assert provisioned.total == pytest.approx(44.16792)
    assert provisioned.total == pytest.approx(PROVISIONED_4)
    on_demand = cost("on-demand")
    assert on_demand.total == pytest.approx(31.205005, abs=1e-6)
    assert on_demand.total == pytest.approx(ON_DEMAND)
    advantage = cost("on-demand-advantage")
    assert advantage.total == pytest.approx(2053.125)
    assert advantage.usage == pytest.approx(600 * 1024 * 43_800 / 1024**3 * 0.032)
    # Above the commitment, Advantage bills what was written and nothing more.
    busy = capacity_cost(
        "on-demand-advantage", shards=4, seconds=60, put_payload_units=0,
        billed_kilobytes=60 * 30 * 1024**2 // 1024,
    )  # fmt: skip
    assert busy.total == pytest.approx(30 * 2_628_000 / 1024 * 0.032)
    assert busy.fixed == pytest.approx(0)


def test_the_comparison_prices_each_row_as_by_hand_and_names_a_mode_and_key():
    result = CliRunner().invoke(
        compare,
        ["--capacity", "provisioned:4,on-demand,on-demand-advantage", "--riders", "10",
         "--duration", "60", "--format", "json", "--jobs", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    rows = [(r["stream"], r["strategy"]) for r in out["runs"]]
    assert rows == [
        ("provisioned:4", "balanced"),
        ("on-demand", "balanced"),
        ("on-demand", "auto"),
        ("on-demand-advantage", "balanced"),
        ("on-demand-advantage", "auto"),
    ]
    assert all(r["records"] == 600 and r["billed_kilobytes"] == 600 for r in out["runs"])
    costs = [r["monthly_usd"]["total"] for r in out["runs"]]
    expected = [PROVISIONED_4, ON_DEMAND, ON_DEMAND, ADVANTAGE, ADVANTAGE]
    assert costs == [round(c, 2) for c in expected]
    assert [r["order_kept"] for r in out["runs"]] == [True, True, False, True, False]
    assert out["recommendation"].startswith(
        "use `on-demand` with `balanced`: $31.21/month, 0.0% throttled, 0 dropped, each "
        "rider's records in order."
    )
    assert out["assumptions"]["scale_out_seconds"] == 60.0


def test_the_table_prints_the_assumptions_and_prices_under_it():
    result = CliRunner().invoke(
        compare,
        ["--capacity", "provisioned:2,on-demand", "--riders", "10", "--duration", "5",
         "--scale-out-seconds", "30", "--jobs", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "30 s after seeing it (assumed: AWS does not publish it)" in text
    assert "on 4 shards (the shard count is assumed)" in text
    assert "checked 2026-12" in text
    assert "Recommendation: use `" in text


def _race(ramp):
    workload = Workload(riders=5000, duration=20, ramp_seconds=ramp)
    comparison = compare_capacities(
        workload,
        [StreamSpec(mode=CapacityMode.ON_DEMAND)],
        PartitionKeyStrategy.AUTO,
        policy=OnDemandPolicy(scale_out_seconds=5),
    )
    [run] = comparison.runs
    return run


def test_a_race_start_all_at_once_throttles_on_demand_until_it_splits_a_ramp_does_not():
    at_once = _race(0)
    # 5,000 records/s on 4,000 records/s of shards: 4,000 accepted in second 0, so twice
    # that (8 shards) 5 s after that second ends; throttled until then.
    assert at_once.run.throttled > 0
    assert at_once.run.scale_outs[0] == (6, 8)
    assert at_once.run.dropped == 0
    ramped = _race(20)
    assert ramped.run.throttled == 0
    assert ramped.run.scale_outs  # it grew while the riders joined


def test_one_on_demand_mode_runs_the_strategies_with_auto_among_them():
    result = CliRunner().invoke(
        compare,
        ["--capacity", "on-demand", "--riders", "20", "--duration", "5", "--format", "json",
         "--jobs", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [r["strategy"] for r in runs][-1] == "auto"
    assert {r["stream"] for r in runs} == {"on-demand"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--capacity", "dedicated"], "give a comma list of provisioned, on-demand"),
        (["--capacity", "on-demand:4"], "only provisioned takes a shard count"),
        (["--capacity", "provisioned:4,on-demand", "--partition-key", "auto"],
         "--partition-key auto cannot run on provisioned:4"),
        (["--strategies", "auto"], "auto needs an on-demand stream"),
        (["--capacity", "on-demand", "--warm-throughput", "5"],
         "--warm-throughput needs on-demand-advantage"),
        (["--capacity", "provisioned,on-demand", "--batching"],
         "several modes with --batching: compare one thing at a time"),
        (["--capacity", "on-demand", "--ingest", "sdk,iot-rule"], "--capacity with --ingest"),
    ],
)  # fmt: skip
def test_capacity_mistakes_are_one_line_usage_errors(args, says):
    result = CliRunner().invoke(compare, [*args, "--riders", "5", "--duration", "2"])
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_capacity_specs_parse_with_their_shards():
    assert parse_capacities("provisioned:8, on-demand", 4) == [
        StreamSpec(mode=CapacityMode.PROVISIONED, shards=8),
        StreamSpec(mode=CapacityMode.ON_DEMAND, shards=4),
    ]


def test_the_csv_has_a_column_for_every_shard_of_every_run():
    result = CliRunner().invoke(
        compare,
        ["--capacity", "provisioned:4,on-demand", "--riders", "5000", "--duration", "12",
         "--scale-out-seconds", "5", "--format", "csv", "--jobs", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["stream"], r["strategy"]) for r in rows] == [
        ("provisioned:4", "balanced"),
        ("on-demand", "balanced"),
        ("on-demand", "auto"),
    ]
    # The on-demand stream split 4 shards into 8 at 6 s (and again later): its children have
    # columns, empty for the provisioned run.
    assert rows[0]["scale_outs"] == ""
    assert [r["scale_outs"].split()[0] for r in rows[1:]] == ["6:8", "6:8"]
    assert rows[0]["shard_11_records"] == ""
    assert int(rows[1]["shard_11_records"]) > 0


def test_the_strategies_on_an_on_demand_stream_say_so_and_count_the_ramps_messages():
    result = CliRunner().invoke(
        compare,
        ["--capacity", "on-demand", "--riders", "20", "--duration", "10", "--ramp", "5",
         "--jobs", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # Riders join 4 a second over 5 s: 4 × (10 + 9 + 8 + 7 + 6) messages.
    assert "× 20 riders × 10 s (160 messages each) on an on-demand stream" in text
