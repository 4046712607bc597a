"""The mock sensor: the shared rider model, one step per second, repeatable by seed."""

from __future__ import annotations

from alleycat_rider.core.physiology import RideBounds
from alleycat_rider.sensors import SensorOptions, open_sensor


def _ride(seed: int, times: list[float]) -> list[tuple[float, float]]:
    with open_sensor(SensorOptions(kind="mock", seed=seed)) as sensor:
        return [(r.cadence, r.resistance) for r in map(sensor.read, times)]


def test_same_seed_rides_the_same_race() -> None:
    times = [100.0 + 0.5 * i for i in range(120)]

    assert _ride(7, times) == _ride(7, times)
    assert _ride(7, times) != _ride(8, times)


def test_model_steps_once_per_whole_second() -> None:
    with open_sensor(SensorOptions(kind="mock", seed=3)) as sensor:
        first = sensor.read(50.0)
        same_second = sensor.read(50.9)
        next_second = sensor.read(51.0)
        three_later = sensor.read(54.2)

    assert same_second == first
    assert next_second != first
    assert (first.at, next_second.at, three_later.at) == (50.0, 51.0, 54.0)
    assert sensor.stats.frames == 5


def test_late_reads_catch_up_to_the_same_values() -> None:
    every_second = _ride(5, [float(t) for t in range(30)])
    skipping = _ride(5, [0.0, 10.0, 29.0])

    assert skipping == [every_second[0], every_second[10], every_second[29]]


def test_rider_stays_within_the_bounds() -> None:
    bounds = RideBounds(cadence_min=40, cadence_max=70, resistance_min=10, resistance_max=20)
    with open_sensor(SensorOptions(kind="mock", seed=11, bounds=bounds)) as sensor:
        readings = [sensor.read(float(t)) for t in range(600)]

    assert all(40 <= r.cadence <= 70 for r in readings)
    assert all(10 <= r.resistance <= 20 for r in readings)


def test_mock_ranges_from_the_configuration_bound_the_rider() -> None:
    from alleycat_rider.cli import sensor_options
    from alleycat_rider.config import load_config

    env = {"ALLEYCAT_MOCK_CADENCE": "60:62", "ALLEYCAT_MOCK_RESISTANCE": "5:8"}
    config = load_config({"endpoint": "localhost", "racer_id": 1, "seed": 4}, env)
    with open_sensor(sensor_options(config)) as sensor:
        readings = [sensor.read(float(t)) for t in range(600)]

    assert all(60 <= r.cadence <= 62 for r in readings)
    # The default range is 33..86: these are readings only the configured range gives.
    assert all(5 <= r.resistance <= 8 for r in readings)
