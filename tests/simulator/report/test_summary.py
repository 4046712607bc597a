import json

from click.testing import CliRunner
from rich.console import Console

from alleycat.cli import cli
from simulator.report.summary import summary_table


def _simulate(*args):
    return CliRunner().invoke(
        cli,
        [
            "simulate",
            "--fast",
            "--riders",
            "100",
            "--duration",
            "30",
            "--seed",
            "1",
            "--start-time",
            "1764187200",
            *args,
        ],
        env={"COLUMNS": "100"},
    )


def _row(text, name):
    return next(line for line in text.splitlines() if line.startswith(f"│ {name} "))


def test_packed_records_show_the_batching_and_the_ride_messages_inside():
    result = _simulate("--batching", "kpl")
    assert result.exit_code == 0, result.output
    packed = json.loads(_simulate("--batching", "kpl", "--json").stdout)
    records = packed["generated"]
    assert records < 3_000 and packed["messages_generated"] == 3_000

    assert "kpl" in _row(result.stdout, "batching")
    assert f"{records:,} records (3,000 ride messages, kpl)" in _row(result.stdout, "generated")
    assert f"{packed['delivered']:,} records (3,000 ride messages, kpl)" in _row(
        result.stdout, "delivered"
    )


def test_one_message_a_record_shows_plain_counts():
    result = _simulate()
    assert result.exit_code == 0, result.output
    assert "per-second" in _row(result.stdout, "batching")
    assert _row(result.stdout, "generated").split("│")[2].strip() == "3,000"


def test_a_summary_without_the_batching_fields_still_renders():
    summary = json.loads(_simulate("--json").stdout)
    for name in ("batching", "messages_generated", "messages_delivered"):
        del summary[name]
    console = Console(width=100, color_system=None, record=True)
    console.print(summary_table(summary))
    assert "3,000" in _row(console.export_text(), "delivered")


def _value(text, name):
    return _row(text, name).split("│")[2].strip()


def test_the_shard_count_reads_right_for_one_shard_and_for_several():
    assert _value(_simulate("--shards", "1").stdout, "stream") == "built-in (1 shard)"
    assert _value(_simulate("--shards", "4").stdout, "stream") == "built-in (4 shards)"


def test_a_fast_run_says_how_many_records_a_second_it_went():
    result = _simulate()
    assert result.exit_code == 0, result.output
    rate = int(_value(result.stdout, "records/s (wall)").replace(",", ""))
    assert rate > 0
    summary = json.loads(_simulate("--json").stdout)
    assert summary["records_per_wall_second"] == round(
        summary["delivered"] / summary["wall_seconds"], 1
    )


def _rendered(summary):
    console = Console(width=100, color_system=None, record=True)
    console.print(summary_table(summary))
    return console.export_text()


def test_a_run_stopped_early_shows_the_seconds_it_rode_of_those_asked_for():
    summary = json.loads(_simulate("--json").stdout)
    assert summary["ridden_seconds"] == 30
    assert _value(_rendered(summary), "riders × seconds") == "100 × 30"
    summary.update(duration=300, ridden_seconds=39, interrupted=True)
    assert _value(_rendered(summary), "riders × seconds") == "100 × 39 of 300"


def test_a_single_packed_record_is_not_plural():
    summary = json.loads(_simulate("--json").stdout)
    summary.update(batching="kpl", generated=1, messages_generated=1)
    assert _value(_rendered(summary), "generated") == "1 record (1 ride message, kpl)"


def test_a_run_stopped_early_says_which_signal_stopped_it():
    summary = json.loads(_simulate("--json").stdout)

    def stopped_row(**extra):
        console = Console(width=100, record=True)
        console.print(summary_table({**summary, "interrupted": True, **extra}))
        return _row(console.export_text(), "stopped early")

    assert "yes (Ctrl-C)" in stopped_row(stopped_by="SIGINT")
    assert "yes (SIGTERM)" in stopped_row(stopped_by="SIGTERM")
    assert "Ctrl-C" not in stopped_row()
