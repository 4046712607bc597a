"""``compare --ingest``: the SDK path and IoT Core's rule, on workloads small enough to check."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from click.testing import CliRunner

from simulator.compare.cli import compare
from simulator.compare.ingest import (
    IotPrices,
    iot_cost,
    iot_steps,
    messaging_cost,
    run_iot_rule,
    run_sdk,
)
from simulator.compare.replay import Workload, record_workload
from simulator.engine.keys import PartitionKeyStrategy

MONTH_S = 730 * 3600


def test_a_small_fleet_costs_what_the_price_list_says() -> None:
    recorded = record_workload(Workload(riders=10, shards=1, duration=10, phase_spread_ms=0))
    rule = run_iot_rule(recorded)
    assert rule.run.records == 100 and rule.run.throttled == 0 and rule.lost == 0
    # 10 riders connected all month: 10 × 43,800 minutes at $0.08 a million.
    assert rule.iot.connectivity == pytest.approx(10 * 43_800 / 1e6 * 0.08)
    # 100 messages in 10 s, each under 5 KB: 26.28 million a month at $1.00 a million.
    per_month = 100 * MONTH_S / 10
    assert per_month == 26_280_000
    assert rule.iot.messaging == pytest.approx(26.28)
    assert rule.iot.rules == pytest.approx(26.28 * 0.15)
    assert rule.iot.actions == pytest.approx(26.28 * 0.15)
    # The stream: one shard all month, and one PUT payload unit per record.
    assert rule.run.cost.provisioned == pytest.approx(730 * 0.015 + 26.28 * 0.014)
    assert rule.monthly_total == pytest.approx(rule.run.cost.provisioned + rule.iot.total)
    sdk = run_sdk(recorded, PartitionKeyStrategy.RANDOM)
    assert sdk.iot.total == 0 and sdk.run.records == 100


def test_bikes_in_the_same_millisecond_share_a_shard_and_the_rule_never_retries() -> None:
    # 1,500 synchronised riders: every message of a second has the same ${timestamp()} key.
    recorded = record_workload(Workload(riders=1500, shards=4, duration=2, phase_spread_ms=0))
    rule = run_iot_rule(recorded, delay_ms=0)
    assert max(rule.run.peak_offered_per_s) == 1500  # a second's 1,500 all on one shard
    assert rule.run.throttled == 2 * 500  # 1,000 a second taken by one shard, 500 refused
    assert rule.run.records == 3000 - 1000
    assert rule.run.retries == 0
    assert rule.lost == 1000 and rule.to_error_action == 0  # no error action: all lost
    kept = run_iot_rule(recorded, delay_ms=0, error_action=True)
    assert kept.lost == 0 and kept.to_error_action == 1000
    sdk = run_sdk(recorded, PartitionKeyStrategy.RANDOM)
    assert sdk.lost == 0 and sdk.run.records == 3000  # spread keys, retries: all delivered


def test_a_key_per_racer_spreads_the_rule_over_the_shards() -> None:
    recorded = record_workload(Workload(riders=1500, shards=4, duration=2, phase_spread_ms=0))
    rule = run_iot_rule(recorded, template="${racerId}", delay_ms=0)
    assert rule.run.throttled == 0 and rule.run.records == 3000
    assert rule.run.riders_on_one_shard == 1.0
    assert max(rule.run.peak_offered_per_s) < 1000


def test_messaging_is_tiered_and_metered_in_5_kb_steps() -> None:
    prices = IotPrices()
    assert messaging_cost(2e9, prices) == pytest.approx(1000 + 800)
    assert messaging_cost(6e9, prices) == pytest.approx(1000 + 4000 * 0.8 + 1000 * 0.7)
    assert [iot_steps(n) for n in (1, 5120, 5121, 12_000)] == [1, 1, 2, 3]
    cost = iot_cost(riders=0, seconds=MONTH_S, metered_steps=2_000_000, prices=prices)
    assert cost.messaging == pytest.approx(2.0) and cost.rules == pytest.approx(0.3)


def test_the_command_prints_both_paths_and_a_recommendation() -> None:
    result = CliRunner().invoke(
        compare,
        ["--ingest", "sdk,iot-rule", "--riders", "1500", "--shards", "1", "--duration", "5",
         "--phase-spread", "0", "--format", "json", "--price-iot-messages", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    sdk, rule = report["runs"]
    assert (sdk["path"], rule["path"]) == ("sdk", "iot-rule")
    assert rule["key"] == "${timestamp()}" and rule["retries"] == 0
    assert rule["lost"] == rule["throttled"] > 0 and sdk["lost"] == 0
    assert report["iot_prices_usd"]["messages_million"] == 2
    assert "loses" in report["recommendation"]
    table = CliRunner().invoke(compare, ["--ingest", "sdk,iot-rule", "--riders", "50",
                                         "--duration", "5"])  # fmt: skip
    assert table.exit_code == 0
    assert "Ingestion paths" in table.output and "Recommendation:" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ingest", "mqtt"], "give a comma list of sdk, iot-rule"),
        (["--ingest", "iot-rule", "--rule-key", "${now()}"], "cannot evaluate ${now()}"),
    ],
)
def test_bad_ingest_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(compare, [*args, "--riders", "5", "--duration", "2"])
    assert result.exit_code == 2
    assert message in result.output


INGEST = ["--ingest", "sdk,iot-rule", "--riders", "1200", "--shards", "1", "--phase-spread", "0",
          "--duration", "10"]  # fmt: skip


def test_json_csv_and_the_table_give_one_set_of_figures() -> None:
    outputs = {}
    for output in ("json", "csv", "table"):
        result = CliRunner().invoke(compare, [*INGEST, "--format", output], terminal_width=200)
        assert result.exit_code == 0, result.output
        outputs[output] = result.output
    runs = json.loads(outputs["json"])["runs"]
    rows = list(csv.DictReader(io.StringIO(outputs["csv"])))
    assert [r["path"] for r in rows] == [r["path"] for r in runs] == ["sdk", "iot-rule"]
    for run, row in zip(runs, rows, strict=True):
        # Every figure of the JSON is in the CSV, under the same name where it is flat.
        for key in ("key", "messages_offered", "messages_delivered", "dropped", "lost",
                    "to_error_action", "throttled", "monthly_total_usd"):  # fmt: skip
            assert str(run[key]) == row[key], key
        assert float(row["iot_monthly_total_usd"]) == run["iot_cost"]["total"]
        assert float(row["stream_monthly_provisioned_usd"]) == run["stream_cost"]["provisioned"]
        # Each key means one thing, and the figures add up.
        assert run["messages_offered"] == 1200 * 10
        assert run["messages_delivered"] + run["dropped"] == run["messages_offered"]
        assert run["lost"] + run["to_error_action"] == run["dropped"]
        total = run["stream_cost"]["provisioned"] + run["iot_cost"]["total"]
        assert run["monthly_total_usd"] == pytest.approx(total, abs=0.02)  # each rounded to cents
        # The table's $/month is the same total.
        line = next(ln for ln in outputs["table"].splitlines() if ln.startswith(run["path"] + " "))
        assert re.split(r"\s+", line.strip())[-1] == f"{run['monthly_total_usd']:,.2f}"
    sdk, rule = runs
    assert rule["dropped"] == rule["lost"] == rule["throttled"] > 0
    assert rule["to_error_action"] == 0  # no error action configured: nothing goes to one
    kept = CliRunner().invoke(compare, [*INGEST, "--format", "json", "--error-action"])
    rule = json.loads(kept.output)["runs"][1]
    assert rule["lost"] == 0 and rule["to_error_action"] == rule["dropped"] > 0


@pytest.mark.parametrize("extra", [["--batching"], ["--batching", "kpl"], ["--strategies", "time"]])
def test_another_comparison_with_ingest_is_a_usage_error(extra: list[str]) -> None:
    result = CliRunner().invoke(compare, [*INGEST, *extra])
    assert result.exit_code == 2
    assert "and --ingest are two comparisons: run them one at a time" in result.output


def test_one_shard_is_one_shard_in_the_notes() -> None:
    result = CliRunner().invoke(compare, [*INGEST, "--duration", "2"])
    text = " ".join(result.output.split())  # the notes wrap at 80 columns
    assert "(1 shard × $" in text and "1 shards" not in text
    batching = CliRunner().invoke(
        compare, ["--batching", "--riders", "10", "--shards", "1", "--duration", "2"]
    )
    assert "Provisioned: 1 shard × $" in " ".join(batching.output.split())
