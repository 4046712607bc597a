"""The one interface every sensor offers the agent: :class:`Sensor`, :class:`Reading`, the options.

The agent calls :meth:`Sensor.read` once a second with ``time.monotonic()`` and gets the latest
:class:`Reading` at once: the serial and BLE sensors read the bike on their own background
thread, so a slow or silent bike never holds up publishing. A sensor silent for
``silence_timeout`` seconds reads as zero cadence, as a bike's own display does.

:func:`alleycat_rider.sensors.choose.open_sensor` picks the backend; this module imports none.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Self

from alleycat_rider.core.physiology import DEFAULT_BOUNDS, RideBounds
from alleycat_rider.errors import ConfigError

#: What ``--sensor`` accepts.
SENSOR_KINDS = ("mock", "serial", "peloton", "ble", "keiser", "echelon")
#: Line protocol devices are usually microcontrollers; 9600 baud is what they default to.
DEFAULT_SERIAL_BAUD = 9600
#: The Peloton bike talks to its head unit at 19200 baud.
DEFAULT_PELOTON_BAUD = 19200
#: Seconds without data after which cadence reads 0 (the Peloton is polled every 100 ms).
DEFAULT_SILENCE_TIMEOUT = 3.0
PELOTON_SILENCE_TIMEOUT = 1.0
#: Keiser consoles below 6.30 advertise every 2 s; Keiser's own app waits 7 s for them.
KEISER_SILENCE_TIMEOUT = 7.0

Clock = Callable[[], float]
"""Monotonic seconds, ``time.monotonic`` outside tests."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the bike said last."""

    cadence: float
    """Crank revolutions per minute; 0 when the sensor has been silent too long."""
    resistance: float
    """The bike's resistance level (kept through silence: the knob has not moved)."""
    at: float
    """Monotonic seconds when these values were received (or the sensor started, if never)."""


@dataclass(slots=True)
class SensorStats:
    """Counters the agent shows the rider; written by the sensor's thread, read by anyone."""

    frames: int = 0
    """Frames or lines parsed."""
    malformed: int = 0
    """Frames or lines rejected and skipped."""
    reconnects: int = 0
    """Times the link to the bike came back after it dropped."""
    ignored: int = 0
    """Well-formed frames that carry no reading (Keiser review-mode frames, Echelon packets
    other than cadence and resistance)."""
    dropouts: int = 0
    """Times the bike fell silent for the timeout, so that cadence read 0."""

    def summary(self) -> dict[str, int]:
        """The counters as the agent's ``stopped`` line gives them: ``sensor_frames``, ..."""
        return {f"sensor_{field.name}": getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorOptions:
    """How to reach the bike; built by the CLI from ``--sensor`` and its companions."""

    kind: str
    """One of :data:`SENSOR_KINDS`."""
    device: str | None = None
    """Serial port path (``/dev/ttyUSB0``) or pyserial URL (``loop://``); serial and peloton."""
    baud: int | None = None
    """Serial speed; None means 9600 for ``serial`` and 19200 for ``peloton``."""
    address: str | None = None
    """BLE address (a UUID on macOS); when absent the bike is found by scanning."""
    ble_name: str | None = None
    """The advertised name to scan for when there is no address; with neither, the first
    device advertising FTMS or CSC is used."""
    seed: int | None = None
    """Seed of the mock rider; None draws a different rider each run."""
    silence_timeout: float | None = None
    """Seconds without data after which cadence reads 0; None for the kind's default
    (1 s for the Peloton, which answers every 100 ms; 3 s otherwise)."""
    bounds: RideBounds = DEFAULT_BOUNDS
    """The range the mock rider rides in."""
    ftms_resistance_scale: float = 1.0
    """Multiplies FTMS resistance; 0.1 for bikes that report ten times the level."""
    peloton_resistance_map: tuple[tuple[float, float], ...] = ()
    """(raw, level) calibration points for the Peloton's raw resistance, interpolated linearly;
    empty reports the raw value."""
    scan_timeout: float = 10.0
    """Seconds to scan for a BLE bike before giving up."""
    reconnect_min_delay: float = 0.5
    """First wait before reopening a dropped link; doubles each failed attempt."""
    reconnect_max_delay: float = 10.0
    """The longest wait between attempts to reopen a dropped link."""
    keiser_id: int | None = None
    """The equipment id set on a Keiser console; None listens to the first Keiser bike heard
    (or the one at ``address``)."""
    cadence_scale: float = 1.0
    """Calibration: multiplies every sensor's cadence."""
    resistance_scale: float = 1.0
    """Calibration: multiplies every sensor's resistance, before ``resistance_offset``."""
    resistance_offset: float = 0.0
    """Calibration: added to every sensor's resistance, after ``resistance_scale``."""

    def __post_init__(self) -> None:
        if (self.silence_timeout is not None and self.silence_timeout <= 0) or (
            self.scan_timeout <= 0
        ):
            raise ConfigError("sensor timeouts must be positive")
        if not 0 < self.reconnect_min_delay <= self.reconnect_max_delay:
            raise ConfigError("reconnect delays must satisfy 0 < min <= max")
        if self.baud is not None and self.baud <= 0:
            raise ConfigError(f"--baud must be positive, not {self.baud}")
        if self.keiser_id is not None and not 0 <= self.keiser_id <= 255:
            raise ConfigError(f"--keiser-id must be from 0 to 255, not {self.keiser_id}")

    @property
    def calibration(self) -> Calibration:
        """The calibration every reading goes through."""
        return Calibration(
            cadence_scale=self.cadence_scale,
            resistance_scale=self.resistance_scale,
            resistance_offset=self.resistance_offset,
        )

    @property
    def effective_silence_timeout(self) -> float:
        """Seconds of silence that read as zero cadence: the one given, else the kind's."""
        if self.silence_timeout is not None:
            return self.silence_timeout
        if self.kind == "peloton":
            return PELOTON_SILENCE_TIMEOUT
        return KEISER_SILENCE_TIMEOUT if self.kind == "keiser" else DEFAULT_SILENCE_TIMEOUT

    @property
    def effective_baud(self) -> int:
        """The serial speed to use: the one given, else the kind's default."""
        if self.baud is not None:
            return self.baud
        return DEFAULT_PELOTON_BAUD if self.kind == "peloton" else DEFAULT_SERIAL_BAUD


class Sensor(ABC):
    """A source of cadence and resistance readings.

    Use it as a context manager, or call :meth:`start` and later :meth:`close`.
    """

    stats: SensorStats

    @abstractmethod
    def start(self) -> None:
        """Open the device and start reading it.

        Raises:
            SensorError: the bike cannot be opened or found; the message says what to do.
        """

    @abstractmethod
    def read(self, now: float) -> Reading:
        """The latest reading, without waiting; cadence 0 if nothing new for the timeout.

        Args:
            now: ``time.monotonic()`` of the caller.
        """

    @abstractmethod
    def close(self) -> None:
        """Stop reading and close the device; calling it again does nothing."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LatestReading:
    """The last values a background reader received, safe to update and read across threads."""

    def __init__(
        self, silence_timeout: float, started_at: float, stats: SensorStats | None = None
    ) -> None:
        """Args:
        silence_timeout: seconds without a cadence after which cadence reads 0.
        started_at: monotonic seconds when reading began.
        stats: where a fall into silence is counted (``dropouts``), once per silence.
        """
        self._lock = threading.Lock()
        self._silence_timeout = silence_timeout
        self._stats = stats
        self._cadence = 0.0
        self._cadence_at = started_at
        self._heard = False
        self._resistance = 0.0
        self._at = started_at

    def update(
        self, at: float, *, cadence: float | None = None, resistance: float | None = None
    ) -> None:
        """Record the values received at ``at``; a value left ``None`` keeps its last one."""
        with self._lock:
            if cadence is not None:
                self._cadence, self._cadence_at = cadence, at
                self._heard = True
            if resistance is not None:
                self._resistance = resistance
            if cadence is not None or resistance is not None:
                self._at = at

    def read(self, now: float) -> Reading:
        """The latest reading as of ``now``, cadence 0 if it is older than the timeout."""
        with self._lock:
            silent = now - self._cadence_at > self._silence_timeout
            if silent and self._heard:
                self._heard = False  # counted once, until the bike speaks again
                if self._stats is not None:
                    self._stats.dropouts += 1
            cadence = 0.0 if silent else self._cadence
            return Reading(cadence, self._resistance, self._at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """A bike's own correction of its numbers: ``cadence x cadence_scale`` and
    ``resistance x resistance_scale + resistance_offset``."""

    cadence_scale: float = 1.0
    resistance_scale: float = 1.0
    resistance_offset: float = 0.0

    @property
    def is_identity(self) -> bool:
        """Whether it changes nothing."""
        return self == Calibration()

    def apply(self, reading: Reading) -> Reading:
        """``reading`` corrected; its time is kept."""
        return Reading(
            reading.cadence * self.cadence_scale,
            reading.resistance * self.resistance_scale + self.resistance_offset,
            reading.at,
        )


class CalibratedSensor(Sensor):
    """A sensor whose every reading goes through a :class:`Calibration`, once, on its way out.

    :func:`~alleycat_rider.sensors.choose.open_sensor` wraps any kind in it, so the agent makes
    its message, and shows its panel, from the corrected values alone.
    """

    def __init__(self, sensor: Sensor, calibration: Calibration) -> None:
        """Args:
        sensor: the sensor read (its counters are this one's).
        calibration: the correction.
        """
        self.sensor = sensor
        self.calibration = calibration
        self.stats = sensor.stats

    def start(self) -> None:
        """Start the wrapped sensor."""
        self.sensor.start()

    def read(self, now: float) -> Reading:
        """The wrapped sensor's reading, corrected."""
        return self.calibration.apply(self.sensor.read(now))

    def close(self) -> None:
        """Close the wrapped sensor."""
        self.sensor.close()


def next_delay(delay: float, options: SensorOptions) -> float:
    """The wait after ``delay`` in a bounded exponential backoff."""
    return min(max(delay * 2, options.reconnect_min_delay), options.reconnect_max_delay)
