import csv
import io
import json

import pytest
from click.testing import CliRunner

from simulator.compare.cli import compare
from simulator.compare.replay import Workload
from simulator.compare.runs import compare_batching, compare_strategies
from simulator.engine.aggregation import PER_SECOND, parse_batching
from simulator.engine.keys import KEYLESS
from simulator.engine.keys import PartitionKeyStrategy as Key

EVEN = Workload(riders=1000, shards=4, duration=20, seed=5)
SYNCHRONISED = Workload(riders=1200, shards=4, duration=20, phase_spread_ms=0, seed=5)


@pytest.fixture(scope="module")
def synchronised():
    comparison = compare_strategies(SYNCHRONISED, [k for k in Key if k not in KEYLESS])
    return {run.strategy: run for run in comparison.runs}


@pytest.fixture(scope="module")
def spread():
    comparison = compare_strategies(EVEN, [Key.RANDOM, Key.CLASS, Key.BALANCED])
    return comparison, {run.strategy: run for run in comparison.runs}


def test_every_strategy_gets_and_delivers_the_same_messages(synchronised):
    assert {run.messages for run in synchronised.values()} == {1200 * 20}
    assert all(run.dropped == 0 for run in synchronised.values())


def test_time_keys_pile_synchronised_riders_onto_one_shard_and_throttle(synchronised):
    time_key = synchronised["time"]
    # Every rider's message of a second shares one timestamp, so one shard gets all 1,200.
    assert time_key.peak_load >= 1.2
    assert time_key.throttled_share > 0.05
    assert time_key.retries > 0
    assert time_key.verdict.startswith("throttles")
    for other in ("random", "racer", "balanced"):
        assert synchronised[other].throttled == 0


def test_random_and_balanced_stay_within_a_few_percent_of_even(spread):
    _, runs = spread
    for name in ("random", "balanced"):
        assert all(abs(share - 0.25) < 0.02 for share in runs[name].shard_share), name
        assert runs[name].imbalance < 1.05


def test_class_keys_pin_each_class_to_one_shard(spread):
    _, runs = spread
    assert runs["class"].classes_on_one_shard == 1.0
    assert runs["balanced"].classes_on_one_shard == 0.0
    # Six classes on four shards: at least one shard carries two classes, none is even.
    assert runs["class"].imbalance > 1.3
    assert "each class pinned" in runs["class"].verdict


def test_only_per_rider_keys_keep_each_rider_on_one_shard(spread):
    _, runs = spread
    assert runs["random"].riders_on_one_shard < 0.01
    assert runs["balanced"].riders_on_one_shard == 1.0
    assert runs["balanced"].out_of_order == 0


def test_recommendation_names_an_even_strategy_that_keeps_rider_order(spread):
    comparison, _ = spread
    assert comparison.recommendation.startswith("use `balanced`")
    assert "`random` scatters each rider over shards" in comparison.recommendation
    assert "`class` is less even" in comparison.recommendation


def test_buffering_five_seconds_cuts_put_payload_units_for_seconds_of_latency():
    modes = [PER_SECOND, parse_batching("buffered:5"), parse_batching("kpl")]
    comparison = compare_batching(EVEN, Key.BALANCED, modes)
    per_second, buffered, kpl = comparison.runs
    assert per_second.put_payload_units == 1000 * 20
    assert buffered.put_payload_units * 20 < per_second.put_payload_units
    assert kpl.put_payload_units * 10 < per_second.put_payload_units
    assert {run.messages for run in comparison.runs} == {1000 * 20}
    assert buffered.hold_p99_ms > 4000 > kpl.hold_p99_ms
    assert buffered.cost.provisioned < per_second.cost.provisioned
    assert buffered.cost.on_demand < per_second.cost.on_demand
    # KPL costs within a few percent of buffering 5 s, for a fraction of the wait.
    assert kpl.cost.provisioned < buffered.cost.provisioned * 1.05
    assert comparison.recommendation.startswith("use `kpl`")
    assert "`buffered:5` saves" in comparison.recommendation
    assert "`per-second` costs" in comparison.recommendation


def _invoke(*args):
    result = CliRunner().invoke(compare, ["--riders", "300", "--duration", "10", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_compare_json_has_one_object_per_strategy():
    data = json.loads(_invoke("--format", "json", "--strategies", "random,class"))
    assert [run["strategy"] for run in data["runs"]] == ["random", "class"]
    assert len(data["runs"][0]["shard_share"]) == 4
    assert data["workload"]["riders"] == 300
    assert data["recommendation"]


def test_compare_csv_has_a_row_per_mode_with_shard_columns():
    rows = list(csv.DictReader(io.StringIO(_invoke("--format", "csv", "--batching"))))
    assert [row["batching"] for row in rows] == ["per-second", "buffered:5", "kpl"]
    assert "shard_3_share" in rows[0] and "monthly_provisioned_usd" in rows[0]


def test_compare_table_shows_heat_map_and_recommendation_in_two_processes():
    output = _invoke("--strategies", "time,balanced", "--jobs", "2")
    assert "Peak offered load per shard" in output
    assert "Recommendation: use `balanced`" in output
    assert "in 2 processes" in output


def test_compare_batching_shows_the_prices_it_used():
    output = _invoke("--batching", "per-second,buffered:2", "--price-shard-hour", "0.02")
    assert "$0.02 per shard-hour" in " ".join(output.split())
    assert "buffered:2" in output


def test_compare_refuses_an_unknown_strategy():
    result = CliRunner().invoke(compare, ["--strategies", "random,hash"])
    assert result.exit_code == 2
    assert "--strategies" in result.output


def test_a_failing_run_in_a_worker_process_is_one_line_not_a_hang(monkeypatch):
    import simulator.compare.runs

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(simulator.compare.runs, "run_one", broken)
    result = CliRunner().invoke(compare, ["--riders", "50", "--duration", "30", "--jobs", "2"])
    assert result.exit_code == 1
    assert "a comparison run failed" in result.output
    assert "boom" in result.output


def test_heat_map_of_many_shards_has_one_cell_per_shard():
    from rich.console import Console

    from simulator.compare.cli import heat_map

    workload = Workload(riders=600, shards=24, duration=5, seed=5)
    runs = compare_strategies(workload, [Key.CLASS, Key.BALANCED]).runs
    console = Console(width=100, color_system=None, record=True)
    console.print(heat_map(runs))
    lines = {line.split()[0]: line.split() for line in console.export_text().splitlines()[3:]}
    assert len(lines["class"][1]) == len(lines["balanced"][1]) == 24
    # Six classes: at most six shards carry load under class keys, every shard under balanced.
    assert 24 - lines["class"][1].count("·") <= 6
    assert "·" not in lines["balanced"][1]


def test_a_one_second_burst_counts_as_the_peak_it_was():
    workload = Workload(riders=1500, shards=1, duration=1, phase_spread_ms=0, seed=5)
    (run,) = compare_strategies(workload, [Key.BALANCED]).runs
    # All 1,500 riders send at once; the shard takes 1,000 of them in that second.
    assert run.peak_offered_per_s[0] >= 1500
    assert run.throttled >= 500
    assert run.messages == 1500
