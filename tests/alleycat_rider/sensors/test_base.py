"""The sensor interface the agent relies on: the factory, silence, and what gets imported."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from alleycat_rider.errors import ConfigError
from alleycat_rider.sensors import SENSOR_KINDS, Reading, SensorOptions, open_sensor
from alleycat_rider.sensors.base import LatestReading


def test_every_kind_opens_a_sensor() -> None:
    options = {
        "mock": SensorOptions(kind="mock", seed=1),
        "serial": SensorOptions(kind="serial", device="loop://"),
        "peloton": SensorOptions(kind="peloton", device="loop://"),
        "ble": SensorOptions(kind="ble", address="AA:BB:CC:DD:EE:FF"),
    }

    for kind in SENSOR_KINDS:
        sensor = open_sensor(options[kind])
        assert sensor.read(0.0).cadence >= 0.0
        sensor.close()


def test_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="mock, serial, peloton, ble"):
        open_sensor(SensorOptions(kind="ant+"))


@pytest.mark.parametrize("kind", ["serial", "peloton"])
def test_serial_kinds_without_a_device_ask_for_one(kind: str) -> None:
    with pytest.raises(ConfigError, match="--device"):
        open_sensor(SensorOptions(kind=kind))


def test_baud_defaults_follow_the_kind() -> None:
    assert SensorOptions(kind="serial").effective_baud == 9600
    assert SensorOptions(kind="peloton").effective_baud == 19200
    assert SensorOptions(kind="peloton", baud=9600).effective_baud == 9600


def test_a_silent_peloton_reads_zero_after_one_second_other_sensors_after_three() -> None:
    assert SensorOptions(kind="peloton").effective_silence_timeout == 1.0
    assert SensorOptions(kind="serial").effective_silence_timeout == 3.0
    assert SensorOptions(kind="ble").effective_silence_timeout == 3.0
    assert SensorOptions(kind="peloton", silence_timeout=2.5).effective_silence_timeout == 2.5


def test_silent_sensor_reads_zero_cadence_and_keeps_resistance() -> None:
    latest = LatestReading(silence_timeout=3.0, started_at=10.0)
    latest.update(11.0, cadence=80.0, resistance=45.0)

    assert latest.read(13.5) == Reading(80.0, 45.0, 11.0)
    assert latest.read(14.5) == Reading(0.0, 45.0, 11.0)


def test_resistance_alone_does_not_keep_a_stale_cadence_alive() -> None:
    latest = LatestReading(silence_timeout=3.0, started_at=0.0)
    latest.update(1.0, cadence=70.0)
    latest.update(5.0, resistance=30.0)

    assert latest.read(5.0) == Reading(0.0, 30.0, 5.0)


def test_sensor_that_never_spoke_reads_zero_from_its_start() -> None:
    latest = LatestReading(silence_timeout=3.0, started_at=7.0)

    assert latest.read(7.5) == Reading(0.0, 0.0, 7.0)


def test_choosing_mock_or_serial_imports_neither_bleak_nor_boto3() -> None:
    code = (
        "import sys\n"
        "from alleycat_rider.sensors import SensorOptions, open_sensor\n"
        "open_sensor(SensorOptions(kind='mock', seed=1)).read(0.0)\n"
        "assert 'serial' not in sys.modules, 'serial'\n"
        "open_sensor(SensorOptions(kind='serial', device='loop://'))\n"
        "loaded = {'bleak', 'boto3', 'botocore'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )

    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "bad",
    [
        {"silence_timeout": 0.0},
        {"reconnect_min_delay": 0.0},
        {"reconnect_min_delay": 20.0, "reconnect_max_delay": 10.0},
        {"baud": 0},
    ],
)
def test_options_that_would_spin_or_never_read_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SensorOptions(kind="serial", device="loop://", **bad)
