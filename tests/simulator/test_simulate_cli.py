import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alleycat.cli import cli

JSON_KEYS = {
    "generated", "delivered", "throttled", "retries", "dropped", "batches",
    "put_payload_units", "latency_ms", "shards",
}  # fmt: skip


def _simulate(*args):
    return CliRunner().invoke(cli, ["simulate", *args])


def test_json_summary_has_the_documented_keys():
    result = _simulate("--riders", "50", "--duration", "10", "--fast", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert JSON_KEYS <= set(summary)
    assert set(summary["latency_ms"]) >= {"p50", "p99"}
    assert summary["generated"] == summary["delivered"] == 500
    assert [s["shard_id"] for s in summary["shards"]] == [f"shardId-{i:012d}" for i in range(4)]
    assert {"shard_id", "records", "bytes", "peak_records_per_s"} <= set(summary["shards"][0])
    assert sum(s["records"] for s in summary["shards"]) == 500


def test_the_summary_says_which_build_ran():
    # scripts/test runs the suite a second time on the compiled build, and says so.
    expected = os.environ.get("ALLEYCAT_EXPECT_BUILD", "pure Python")
    result = _simulate("--riders", "10", "--duration", "2", "--fast", "--json")
    assert json.loads(result.output)["build"] == expected
    table = _simulate("--riders", "10", "--duration", "2", "--fast")
    assert f"({expected})" in table.output


def test_the_summary_table_reports_counts_and_shards():
    result = _simulate("--riders", "20", "--duration", "5", "--fast", "--shards", "2")
    assert result.exit_code == 0, result.output
    assert "delivered" in result.output and "100" in result.output
    assert "shardId-000000000001" in result.output


def test_one_shard_for_1200_riders_throttles_and_retries_without_dropping():
    result = _simulate(
        "--riders", "1200", "--duration", "10", "--shards", "1", "--fast", "--seed", "2", "--json"
    )
    summary = json.loads(result.output)
    assert summary["throttled"] > 0 and summary["retries"] > 0
    assert summary["dropped"] == 0 and summary["delivered"] == 12_000


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--riders", "0"], "--riders"),
        (["--shards", "0"], "--shards"),
        (["--partition-key", "shard"], "--partition-key"),
        (["--max-records", "501"], "--max-records"),
        (["--max-request-bytes", str(10 * 2**20 + 1)], "--max-request-bytes"),
        (["--max-record-bytes", str(10 * 2**20 + 1)], "--max-record-bytes"),
        (["--speed", "5", "--fast"], "--speed or --fast"),
        (["--start-time", "yesterday"], "ISO 8601"),
        (["--max-record-bytes", "2000", "--max-request-bytes", "1000"], "record size"),
    ],
)
def test_bad_arguments_are_usage_errors(args, complaint):
    result = _simulate(*args)
    assert result.exit_code == 2
    assert complaint in result.output
    assert "Traceback" not in result.output


def test_simulate_runs_as_a_program_and_prints_clean_json():
    completed = subprocess.run(
        [sys.executable, "-m", "alleycat", "simulate", "--riders", "10", "--duration", "3",
         "--fast", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(completed.stdout)["generated"] == 30


def test_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    commands = cli.list_commands(None)  # type: ignore[arg-type]
    assert "simulate" in commands
    for name in commands:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert name in top.output
        assert len(result.output.splitlines()) > 5, name


def _simulate_stopped_by(sig: signal.Signals) -> tuple[int, str, str]:
    """A real-time ``simulate`` sent ``sig`` once under way: its status, stdout and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "alleycat", "simulate", "--riders", "200", "--speed", "5",
         "--json", "--no-dashboard"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first_progress = process.stderr.readline()  # printed once the run is under way
        assert "generated" in first_progress
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, stderr


def test_sigterm_stops_generation_drains_and_still_reports():
    returncode, stdout, stderr = _simulate_stopped_by(signal.SIGTERM)
    assert returncode == 0
    assert "stopping" in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    assert 0 < summary["generated"] < 200 * 300
    assert summary["delivered"] + summary["dropped"] == summary["generated"]


def test_ctrl_c_drains_reports_what_ran_then_exits_130():
    returncode, stdout, stderr = _simulate_stopped_by(signal.SIGINT)
    assert returncode == 130  # after the summary, as shells expect of Ctrl-C
    assert "stopping" in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True and summary["stopped_by"] == "SIGINT"
    assert 0 < summary["generated"] < 200 * 300
    assert summary["delivered"] + summary["dropped"] == summary["generated"]
    # The seconds every rider rode before the stop, not the --duration asked for.
    assert summary["ridden_seconds"] == summary["messages_generated"] // 200 < 300
