"""Where the rider's cadence and resistance come from: one :class:`Sensor` interface, one module
per kind (``mock``, ``serial``, ``peloton``, ``ble``, ``keiser``, ``echelon``), picked by
:func:`open_sensor`, which also applies the rider's calibration.

Importing this package imports neither bleak nor pyserial; only the chosen backend does.
"""

from alleycat_rider.sensors.base import (
    SENSOR_KINDS,
    Reading,
    Sensor,
    SensorOptions,
    SensorStats,
)
from alleycat_rider.sensors.choose import open_sensor

__all__ = ["SENSOR_KINDS", "Reading", "Sensor", "SensorOptions", "SensorStats", "open_sensor"]
