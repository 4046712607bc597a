"""Numbers from users: NaN, infinity and out-of-range values are refused whichever way they come."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from click.types import FloatParamType

from alleycat.cli import cli
from alleycat_rider.bounds import BoundedFloat, Bounds
from alleycat_rider.config import BOUNDS, SETTINGS, load_config
from alleycat_rider.errors import ConfigError

LOCAL = ["--endpoint", "127.0.0.1", "--racer-id", "7", "--log-format", "json"]


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_nan_and_infinity_are_refused_even_without_bounds(text: str) -> None:
    with pytest.raises(ValueError, match="must be a finite number, not"):
        Bounds().check(text)


def test_bounds_say_what_they_allow() -> None:
    assert Bounds(minimum=0, min_open=True).describe() == "a finite number > 0"
    assert Bounds(minimum=0).describe() == "a finite number >= 0"
    assert Bounds(minimum=1, maximum=65535, integer=True).describe() == (
        "a whole number from 1 to 65535"
    )
    assert Bounds(minimum=0, min_open=True).check("0.5") == 0.5
    with pytest.raises(ValueError, match=r"must be a finite number > 0, not 0"):
        Bounds(minimum=0, min_open=True).check(0)
    with pytest.raises(ValueError, match="whole number"):
        Bounds(minimum=1, integer=True).check("1.5")
    assert Bounds(minimum=1, integer=True).check("12") == 12


def test_every_float_setting_of_the_agent_has_bounds() -> None:
    floats = {key for key, kind in SETTINGS.items() if kind == "float"}
    assert floats <= set(BOUNDS)


# Each value arrives as a flag, an ALLEYCAT_* variable or a line of rider.toml.
SOURCES = ["flag", "environment", "file"]
BAD = [
    ("drain_timeout", "nan"),
    ("drain_timeout", "inf"),
    ("status_interval", "nan"),
    ("status_interval", "-1"),
    ("ftms_resistance_scale", "-1"),
    ("ftms_resistance_scale", "0"),
    ("ftms_resistance_scale", "inf"),
    ("cadence_scale", "0"),
    ("cadence_scale", "11"),
    ("resistance_scale", "nan"),
    ("resistance_scale", "-0.5"),
    ("resistance_offset", "-101"),
    ("resistance_offset", "inf"),
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("key", "text"), BAD)
def test_a_bad_number_is_one_line_and_exit_2_from_any_source(
    tmp_path: Path, source: str, key: str, text: str
) -> None:
    config = tmp_path / "rider.toml"
    # TOML writes infinity as inf and NaN as nan, bare.
    config.write_text(f"{key} = {text}\n" if source == "file" else "")
    args = [*LOCAL, "--config", str(config), "--spool", str(tmp_path / "s.db")]
    # A sensor that cannot open: were the value let through, the ride would end there (exit 1).
    args += ["--sensor", "serial", "--device", str(tmp_path / "ttyNOPE")]
    env = {"HOME": str(tmp_path)}
    if source == "flag":
        args += ["--" + key.replace("_", "-"), text]
    elif source == "environment":
        env["ALLEYCAT_" + key.upper()] = text
    result = CliRunner().invoke(cli, ["ride", *args], env=env)
    assert result.exit_code == 2, result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: ") and "must be a finite number" in last
    named = {"flag": "--" + key.replace("_", "-"), "environment": "ALLEYCAT_" + key.upper()}
    assert named.get(source, f"{key} in {config}") in last
    assert "Traceback" not in result.output + result.stderr
    if source != "flag":  # a flag's error also shows click's usage line
        assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALLEYCAT_PORT": "70000"}, "ALLEYCAT_PORT must be a whole number from 1 to 65535"),
        ({"ALLEYCAT_SPOOL_MAX": "0"}, "ALLEYCAT_SPOOL_MAX must be a whole number >= 1"),
        ({"ALLEYCAT_RACE_SECONDS": "1e3"}, "ALLEYCAT_RACE_SECONDS must be a whole number"),
        ({"ALLEYCAT_KEISER_ID": "256"}, "ALLEYCAT_KEISER_ID must be a whole number from 0 to 255"),
    ],
)
def test_the_environment_is_held_to_the_flags_integer_bounds(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"endpoint": "localhost", "racer_id": 1}, env)


def test_settings_given_programmatically_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="drain_timeout must be a finite number >= 0, not nan"):
        load_config({"endpoint": "localhost", "racer_id": 1, "drain_timeout": float("nan")}, {})


def test_good_numbers_still_pass_from_every_source(tmp_path: Path) -> None:
    path = tmp_path / "rider.toml"
    path.write_text("drain_timeout = 2\nftms_resistance_scale = 0.1\n")
    env = {"ALLEYCAT_STATUS_INTERVAL": "7.5", "ALLEYCAT_PORT": "1884"}
    config = load_config({"endpoint": "localhost", "racer_id": 1, "baud": 9600}, env, path)
    assert (config.drain_timeout, config.ftms_resistance_scale) == (2.0, 0.1)
    assert (config.status_interval, config.port, config.baud) == (7.5, 1884, 9600)


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--record-ttl", "nan"),
        ("--flush-interval", "inf"),
        ("--flush-interval", "nan"),
        ("--speed", "inf"),
    ],
)
def test_simulate_refuses_nan_and_infinity(option: str, text: str) -> None:
    result = CliRunner().invoke(
        cli, ["simulate", "--fast", "--riders", "1", "--duration", "1", option, text]
    )
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': must be a finite number" in result.output
    assert "Traceback" not in result.output


def _commands() -> list[tuple[str, click.Command]]:
    found = []
    for name in cli.list_commands(click.Context(cli)):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        if isinstance(command, click.Group):
            subs = command.commands.items()
            found += [(f"{name} {sub}", subcommand) for sub, subcommand in subs]
        else:
            found.append((name, command))
    return found


def test_every_float_option_of_every_command_refuses_nan_and_infinity() -> None:
    floats = [
        (name, param)
        for name, command in _commands()
        for param in command.params
        if isinstance(param.type, FloatParamType)
    ]
    assert len(floats) >= 10  # ride, simulate, compare, rule, standings, stack all take some
    for name, param in floats:
        assert isinstance(param.type, BoundedFloat), (name, param.name)
        for text in ("nan", "inf"):
            with pytest.raises(click.BadParameter, match="finite"):
                param.type.convert(text, param, None)
