"""Picking the sensor backend ``--sensor`` names.

``bleak`` and ``pyserial`` are imported only inside the branch of :func:`open_sensor` that needs
them, so a rider on a mock or serial sensor never pays for the other. The concrete sensors import
:mod:`alleycat_rider.sensors.base`; only this module imports them.
"""

from __future__ import annotations

from alleycat_rider.errors import ConfigError
from alleycat_rider.sensors.base import SENSOR_KINDS, CalibratedSensor, Sensor, SensorOptions


def open_sensor(options: SensorOptions) -> Sensor:
    """Build the sensor ``options`` ask for, not yet started, its readings calibrated.

    Raises:
        ConfigError: the kind is unknown or lacks the option it needs.
    """
    sensor = _open_kind(options)
    calibration = options.calibration
    return sensor if calibration.is_identity else CalibratedSensor(sensor, calibration)


def _open_kind(options: SensorOptions) -> Sensor:
    match options.kind:
        case "mock":
            from alleycat_rider.sensors.mock import MockSensor

            return MockSensor(options)
        case "serial" | "peloton":
            if not options.device:
                raise ConfigError(
                    f"--sensor {options.kind} needs --device: the serial port the bike is on, "
                    "e.g. /dev/ttyUSB0 (see `ls /dev/serial/by-id/`)"
                )
            if options.kind == "peloton":
                from alleycat_rider.sensors.peloton import PelotonSensor

                return PelotonSensor(options)
            from alleycat_rider.sensors.serial_line import SerialLineSensor

            return SerialLineSensor(options)
        case "ble":
            from alleycat_rider.sensors.ble import BleSensor

            return BleSensor(options)
        case "keiser":
            from alleycat_rider.sensors.keiser import KeiserSensor

            return KeiserSensor(options)
        case "echelon":
            from alleycat_rider.sensors.echelon import EchelonSensor

            return EchelonSensor(options)
        case _:
            raise ConfigError(
                f"unknown sensor {options.kind!r}: choose one of {', '.join(SENSOR_KINDS)}"
            )
