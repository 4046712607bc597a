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
