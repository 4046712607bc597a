"""The root command's error reporting: one line on stderr, suggestions, and Ctrl-C's status."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from alleycat.cli import COMMANDS, cli, similar


def test_a_mistyped_command_gets_a_suggestion() -> None:
    result = CliRunner().invoke(cli, ["simulat", "--riders", "3"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "Error: No such command 'simulat'. Did you mean 'simulate'?\n"


def test_a_command_cut_short_suggests_the_commands_it_begins() -> None:
    result = CliRunner().invoke(cli, ["st"])
    assert result.exit_code == 2
    assert result.stderr == "Error: No such command 'st'. Did you mean 'stack' or 'standings'?\n"


def test_an_unknown_word_gets_no_suggestion() -> None:
    result = CliRunner().invoke(cli, ["xyzzy"])
    assert result.stderr == "Error: No such command 'xyzzy'.\n"
    assert similar("xyzzy", sorted(COMMANDS)) == []


# locust hands its options to Locust's own parser, whose messages are its own.
@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"locust"}))
def test_a_usage_error_is_one_line_on_stderr_for_every_command(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--no-such-flag"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: No such option '--no-such-flag'.")
    assert result.stderr.count("\n") == 1


def test_a_bad_value_is_one_line_without_the_usage_block() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--riders", "0"])
    assert result.exit_code == 2
    assert (
        result.stderr == "Error: Invalid value for '--riders': must be a whole number >= 1, not 0\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--riders", "many"], "'--riders': must be a whole number >= 1, not 'many'"),
        (["ride", "--port", "x"], "'--port': must be a whole number from 1 to 65535, not 'x'"),
        (
            ["compare", "--shards", "2000"],
            "'--shards': must be a whole number from 1 to 1024, not 2000",
        ),
        (
            ["stack", "--shards", "1.5"],
            "'--shards': must be a whole number from 1 to 100, not '1.5'",
        ),
    ],
)
def test_a_whole_number_option_says_what_it_takes(args: list[str], message: str) -> None:
    """Not click's "'x' is not a valid integer range."."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr == f"Error: Invalid value for {message}\n"


def test_a_whole_number_environment_variable_says_what_it_takes(tmp_path: Path) -> None:
    """Not "ALLEYCAT_RACER_ID must be a int: invalid literal for int() with base 10"."""
    result = CliRunner().invoke(
        cli,
        ["ride", "--endpoint", "127.0.0.1"],
        env={"ALLEYCAT_RACER_ID": "seven", "HOME": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert result.stderr == "Error: ALLEYCAT_RACER_ID must be a whole number, not 'seven'\n"


def test_the_root_usage_error_is_one_line() -> None:
    result = CliRunner().invoke(cli, ["--no-such-flag"])
    assert result.exit_code == 2
    assert result.stderr == "Error: No such option '--no-such-flag'.\n"


def test_ctrl_c_while_verify_waits_on_the_stream_exits_130(tmp_path: Path) -> None:
    """verify has no summary to give when stopped: the root command turns Ctrl-C into 130."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "HOME": str(tmp_path),
        }
        process = subprocess.Popen(
            [sys.executable, "-c", "from alleycat.cli import main; main()", "verify",
             "--stream", "rides", "--endpoint-url", f"http://127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            connection, _ = server.accept()
            with connection:
                # Once its request has arrived, verify waits for an answer that never comes.
                connection.settimeout(20)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(65536)
                    assert chunk, "verify closed the connection without a request"
                    request += chunk
                process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "Traceback" not in err and "Aborted" not in err
    assert out == ""
