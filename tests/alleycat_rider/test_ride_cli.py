"""`alleycat ride` on the command line: help, and one clear line for each mistake a user makes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from alleycat.cli import cli
from alleycat_rider.cli import ride
from tests.servers.ports import free_port

LOCAL = ["--endpoint", "127.0.0.1", "--racer-id", "7", "--log-format", "json"]


def run(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["ride", *args, "--spool", str(tmp_path / "spool.db")], env={"HOME": str(tmp_path)}
    )
    return result.exit_code, result.stdout, result.stderr


def test_every_option_of_ride_has_help() -> None:
    missing = [
        param.name for param in ride.params if isinstance(param, click.Option) and not param.help
    ]
    assert missing == []
    result = CliRunner().invoke(cli, ["ride", "--help"])
    assert result.exit_code == 0
    assert "ALLEYCAT_<NAME>" in result.output
    assert "--results-topic" in result.output


def test_a_missing_certificate_is_one_line_and_exit_1(tmp_path: Path) -> None:
    args = ["--endpoint", "iot.example.com", "--racer-id", "7"]
    args += ["--cert", str(tmp_path / "nope.crt"), "--key", str(tmp_path / "nope.key")]
    code, _, stderr = run(args, tmp_path)
    assert code == 1
    assert (
        stderr
        == f"Error: the device certificate {tmp_path / 'nope.crt'} does not exist: check --cert\n"
    )


def test_a_key_that_is_not_pem_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cert = tmp_path / "d.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    key = tmp_path / "d.key"
    key.write_text("hello")
    code, _, stderr = run(["--endpoint", "iot.example.com", "--racer-id", "7",
                           "--cert", str(cert), "--key", str(key)], tmp_path)  # fmt: skip
    assert code == 1
    assert stderr == f"Error: the private key {key} is not a PEM file (--key)\n"


def test_an_unknown_serial_device_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, stdout, stderr = run([*LOCAL, "--sensor", "serial", "--device", "/dev/ttyNOPE"], tmp_path)
    assert code == 1
    assert stderr.startswith("Error: serial device /dev/ttyNOPE does not exist")
    assert stderr.count("\n") == 1
    assert stdout == ""  # said once, on stderr: not again in the log


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists() or "DBUS_SYSTEM_BUS_ADDRESS" in os.environ,
    reason="this machine may have a Bluetooth service, and a Keiser agent would then ride on",
)
@pytest.mark.parametrize("sensor", [["keiser", "--keiser-id", "7"], ["echelon"]])
def test_a_bike_bluetooth_cannot_reach_is_one_line_and_exit_1(
    tmp_path: Path, sensor: list[str]
) -> None:
    # This machine has no Bluetooth service: what a computer without bluetoothd shows.
    code, stdout, stderr = run([*LOCAL, "--sensor", *sensor], tmp_path)
    assert code == 1
    assert stderr.startswith("Error: ") and "Bluetooth" in stderr
    assert stderr.count("\n") == 1
    assert stdout == ""


def test_a_keiser_id_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    code, _, stderr = run([*LOCAL, "--sensor", "keiser", "--keiser-id", "256"], tmp_path)
    assert code == 2
    assert "--keiser-id" in stderr and "from 0 to 255" in stderr


def test_an_error_on_the_panel_is_said_once_on_stderr(tmp_path: Path) -> None:
    args = ["--endpoint", "127.0.0.1", "--racer-id", "7", "--log-format", "panel"]
    code, stdout, stderr = run([*args, "--sensor", "serial", "--device", "/dev/ttyNOPE"], tmp_path)
    assert code == 1
    assert "ttyNOPE" not in stdout
    assert stderr.count("ttyNOPE") == 1 and stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--racer-id", "7"], "missing endpoint"),
        (["--endpoint", "iot.example.com", "--racer-id", "7"], "pass --cert and --key"),
        ([*LOCAL, "--name", "FarTooLongName"], "name must be 1 to 8 characters"),
        ([*LOCAL, "--sensor", "serial"], "--sensor serial needs --device"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, stderr = run(args, tmp_path)
    assert code == 2
    assert stderr.startswith("Error: ") and message in stderr
    assert stderr.count("\n") == 1


def test_a_bad_config_file_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "rider.toml"
    config.write_text('endpoint = "127.0.0.1"\nracer_id = 7\ncolour = "red"\n')
    code, _, stderr = run(["--config", str(config)], tmp_path)
    assert code == 2
    assert "unknown setting 'colour'" in stderr


def test_a_bad_flag_value_is_a_usage_error(tmp_path: Path) -> None:
    code, _, stderr = run([*LOCAL, "--qos", "2"], tmp_path)
    assert code == 2
    assert "Invalid value for '--qos'" in stderr


def test_the_agent_imports_neither_boto3_nor_the_simulator_nor_rich() -> None:
    modules = [
        "alleycat.cli", "alleycat_rider.cli", "alleycat_rider.agent.loop", "alleycat_rider.mqtt",
        "alleycat_rider.agent.publisher", "alleycat_rider.agent.spool",
        "alleycat_rider.agent.display", "alleycat_rider.config", "alleycat_rider.core.standings",
        "alleycat_rider.agent.schedule",
    ]  # fmt: skip
    code = (
        f"import sys\nfor name in {modules!r}:\n    __import__(name)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'boto3', 'botocore', 'simulator', 'rich', 'awscrt', 'awsiot'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("flag", "Invalid value for '--mock-cadence': need 0 <= MIN < MAX, not '90:30'"),
        ("environment", "ALLEYCAT_MOCK_CADENCE must be a range: need 0 <= MIN < MAX"),
        ("file", "mock_cadence in"),
    ],
)
def test_a_bad_mock_range_is_a_usage_error_from_any_source(
    tmp_path: Path, source: str, message: str
) -> None:
    config = tmp_path / "rider.toml"
    config.write_text('mock_cadence = "90:30"\n' if source == "file" else "")
    args = [*LOCAL, "--config", str(config)]
    if source == "flag":
        args += ["--mock-cadence", "90:30"]
    env = {"HOME": str(tmp_path)}
    if source == "environment":
        env["ALLEYCAT_MOCK_CADENCE"] = "90:30"
    result = CliRunner().invoke(cli, ["ride", *args, "--spool", str(tmp_path / "s.db")], env=env)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr
    if source != "flag":  # a flag's error also shows click's usage line
        assert result.stderr.count("\n") == 1


def test_a_peloton_map_whose_raw_values_go_down_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, _, stderr = run([*LOCAL, "--peloton-resistance-map", "0:0,800:60,400:100"], tmp_path)
    assert code == 2
    assert stderr.splitlines()[-1] == (
        "Error: Invalid value for '--peloton-resistance-map': "
        "RAW must increase from point to point, not '0:0,800:60,400:100'"
    )


def test_ride_and_provision_help_show_examples() -> None:
    for command, example in [
        ("ride", "alleycat ride --config /etc/alleycat/rider.toml --log-format json"),
        ("provision", "alleycat provision --thing-name bike-17 --racer-id 17"),
    ]:
        result = CliRunner().invoke(cli, [command, "--help"], terminal_width=80)
        assert result.exit_code == 0
        assert "Examples:" in result.output
        assert example in result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80


def test_defaults_decided_by_the_config_read_like_click_defaults() -> None:
    result = CliRunner().invoke(cli, ["ride", "--help"], terminal_width=200)
    assert "Broker port.  [default: 8883, or 1883 without TLS; 1<=x<=65535]" in result.output
    assert "Race length in seconds.  [default: 300; x>=1]" in result.output
    assert "[8883" not in result.output


def _help_texts(command: click.Command, path: str) -> Iterator[tuple[str, str]]:
    for param in command.params:
        if isinstance(param, click.Option) and param.help:
            yield f"{path} {param.opts[0]}", param.help
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _help_texts(sub, f"{path} {name}")


def test_no_option_writes_its_default_in_a_style_of_its_own() -> None:
    """Every default reads ``[default: ...]``, as click writes it, never a bracket of our own."""
    own_style = re.compile(r"\[[^\]]*\]\.?$")
    found = [
        (where, text)
        for name in cli.list_commands(click.Context(cli))
        if (command := cli.get_command(click.Context(cli), name)) is not None
        for where, text in _help_texts(command, name)
        if own_style.search(text)
    ]
    assert found == []


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_ctrl_c_ends_the_ride_with_130_and_sigterm_with_0(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """130 after the final lines, as shells expect of Ctrl-C; systemd's SIGTERM is a clean stop."""
    port = free_port()  # nothing listens there: the agent rides offline, retrying
    process = subprocess.Popen(
        [sys.executable, "-m", "alleycat", "ride", *LOCAL, "--port", str(port), "--qos", "0",
         "--spool", str(tmp_path / "spool.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ,
        "HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if json.loads(line)["message"] == "starting":
                break
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == status
    assert [json.loads(line)["message"] for line in stdout.splitlines()][-1] == "stopped"
    assert stderr == ""
