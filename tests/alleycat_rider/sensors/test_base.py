"""The sensor interface the agent relies on: the factory, silence, and what gets imported."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from alleycat_rider.errors import ConfigError
from alleycat_rider.sensors import SENSOR_KINDS, Reading, Sensor, SensorOptions, open_sensor
from alleycat_rider.sensors.base import CalibratedSensor, LatestReading, SensorStats


def test_every_kind_opens_a_sensor() -> None:
    options = {
        "mock": SensorOptions(kind="mock", seed=1),
        "serial": SensorOptions(kind="serial", device="loop://"),
        "peloton": SensorOptions(kind="peloton", device="loop://"),
        "ble": SensorOptions(kind="ble", address="AA:BB:CC:DD:EE:FF"),
        "keiser": SensorOptions(kind="keiser", keiser_id=7),
        "echelon": SensorOptions(kind="echelon", address="AA:BB:CC:DD:EE:FF"),
    }

    for kind in SENSOR_KINDS:
        sensor = open_sensor(options[kind])
        assert sensor.read(0.0).cadence >= 0.0
        sensor.close()


def test_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="mock, serial, peloton, ble, keiser, echelon"):
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


def test_a_silent_keiser_reads_zero_after_seven_seconds_as_keisers_own_app_waits() -> None:
    assert SensorOptions(kind="keiser").effective_silence_timeout == 7.0
    assert SensorOptions(kind="echelon").effective_silence_timeout == 3.0


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


def test_each_fall_into_silence_is_one_dropout() -> None:
    stats = SensorStats()
    latest = LatestReading(silence_timeout=3.0, started_at=0.0, stats=stats)
    latest.read(10.0)  # never spoke: nothing dropped out
    latest.update(11.0, cadence=70.0)

    for now in (12.0, 14.5, 15.0, 20.0):  # silent from 14.0 on, read three times
        latest.read(now)
    latest.update(21.0, cadence=72.0, resistance=40.0)
    latest.read(30.0)

    assert stats.dropouts == 2
    assert stats.summary()["sensor_dropouts"] == 2


def test_sensor_that_never_spoke_reads_zero_from_its_start() -> None:
    latest = LatestReading(silence_timeout=3.0, started_at=7.0)

    assert latest.read(7.5) == Reading(0.0, 0.0, 7.0)


def test_keiser_and_echelon_decoders_load_without_bleak() -> None:
    code = (
        "import sys\n"
        "import alleycat_rider.sensors.keiser_frames, alleycat_rider.sensors.echelon_frames\n"
        "from alleycat_rider.sensors import SensorOptions, open_sensor\n"
        "open_sensor(SensorOptions(kind='mock', seed=1, cadence_scale=2.0)).read(0.0)\n"
        "loaded = {'bleak', 'serial', 'boto3'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "open_sensor(SensorOptions(kind='keiser', keiser_id=3))\n"
        "assert 'bleak' in sys.modules\n"
    )

    subprocess.run([sys.executable, "-c", code], check=True)


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


# --- Calibration -----------------------------------------------------------------------------


class FixedSensor(Sensor):
    """A sensor that always says the same."""

    def __init__(self, reading: Reading) -> None:
        self.stats = SensorStats(frames=5)
        self.reading = reading
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def read(self, now: float) -> Reading:
        return self.reading

    def close(self) -> None:
        self.closed = True


def test_calibration_scales_cadence_and_scales_then_offsets_resistance() -> None:
    options = SensorOptions(
        kind="mock", cadence_scale=0.5, resistance_scale=2.0, resistance_offset=-10.0
    )
    inner = FixedSensor(Reading(80.0, 30.0, 4.0))

    with CalibratedSensor(inner, options.calibration) as sensor:
        assert sensor.read(5.0) == Reading(40.0, 50.0, 4.0)
        assert inner.started and sensor.stats.frames == 5
    assert inner.closed


def test_open_sensor_calibrates_once_and_not_at_all_when_asked_nothing() -> None:
    raw = open_sensor(SensorOptions(kind="mock", seed=3))
    calibrated = open_sensor(
        SensorOptions(
            kind="mock", seed=3, cadence_scale=2.0, resistance_scale=0.5, resistance_offset=1.0
        )
    )

    assert not isinstance(raw, CalibratedSensor)
    assert isinstance(calibrated, CalibratedSensor)
    assert not isinstance(calibrated.sensor, CalibratedSensor)
    for now in (0.0, 1.0, 2.0, 7.0):
        before, after = raw.read(now), calibrated.read(now)
        assert after.cadence == pytest.approx(before.cadence * 2.0)
        assert after.resistance == pytest.approx(before.resistance * 0.5 + 1.0)


@pytest.mark.parametrize(
    "options",
    [
        SensorOptions(kind="serial", device="loop://", cadence_scale=1.5),
        SensorOptions(kind="peloton", device="loop://", resistance_offset=5.0),
        SensorOptions(kind="ble", address="AA:BB", resistance_scale=0.1),
        SensorOptions(kind="keiser", keiser_id=1, cadence_scale=1.1),
        SensorOptions(kind="echelon", address="AA:BB", resistance_scale=0.9),
    ],
    ids=lambda options: options.kind,
)
def test_every_kind_is_calibrated_by_open_sensor(options: SensorOptions) -> None:
    sensor = open_sensor(options)

    assert isinstance(sensor, CalibratedSensor)
    assert sensor.calibration == options.calibration
    assert sensor.stats is sensor.sensor.stats
    sensor.close()
