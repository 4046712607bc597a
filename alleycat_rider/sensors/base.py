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
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from alleycat_rider.core.physiology import DEFAULT_BOUNDS, RideBounds
from alleycat_rider.errors import ConfigError

#: What ``--sensor`` accepts.
SENSOR_KINDS = ("mock", "serial", "peloton", "ble")
#: Line protocol devices are usually microcontrollers; 9600 baud is what they default to.
DEFAULT_SERIAL_BAUD = 9600
#: The Peloton bike talks to its head unit at 19200 baud.
DEFAULT_PELOTON_BAUD = 19200
#: Seconds without data after which cadence reads 0 (the Peloton is polled every 100 ms).
DEFAULT_SILENCE_TIMEOUT = 3.0
PELOTON_SILENCE_TIMEOUT = 1.0

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

    def __post_init__(self) -> None:
        if (self.silence_timeout is not None and self.silence_timeout <= 0) or (
            self.scan_timeout <= 0
        ):
            raise ConfigError("sensor timeouts must be positive")
        if not 0 < self.reconnect_min_delay <= self.reconnect_max_delay:
            raise ConfigError("reconnect delays must satisfy 0 < min <= max")
        if self.baud is not None and self.baud <= 0:
            raise ConfigError(f"--baud must be positive, not {self.baud}")

    @property
    def effective_silence_timeout(self) -> float:
        """Seconds of silence that read as zero cadence: the one given, else the kind's."""
        if self.silence_timeout is not None:
            return self.silence_timeout
        return PELOTON_SILENCE_TIMEOUT if self.kind == "peloton" else DEFAULT_SILENCE_TIMEOUT

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

    def __init__(self, silence_timeout: float, started_at: float) -> None:
        """Args:
        silence_timeout: seconds without a cadence after which cadence reads 0.
        started_at: monotonic seconds when reading began.
        """
        self._lock = threading.Lock()
        self._silence_timeout = silence_timeout
        self._cadence = 0.0
        self._cadence_at = started_at
        self._resistance = 0.0
        self._at = started_at

    def update(
        self, at: float, *, cadence: float | None = None, resistance: float | None = None
    ) -> None:
        """Record the values received at ``at``; a value left ``None`` keeps its last one."""
        with self._lock:
            if cadence is not None:
                self._cadence, self._cadence_at = cadence, at
            if resistance is not None:
                self._resistance = resistance
            if cadence is not None or resistance is not None:
                self._at = at

    def read(self, now: float) -> Reading:
        """The latest reading as of ``now``, cadence 0 if it is older than the timeout."""
        with self._lock:
            silent = now - self._cadence_at > self._silence_timeout
            cadence = 0.0 if silent else self._cadence
            return Reading(cadence, self._resistance, self._at)


def next_delay(delay: float, options: SensorOptions) -> float:
    """The wait after ``delay`` in a bounded exponential backoff."""
    return min(max(delay * 2, options.reconnect_min_delay), options.reconnect_max_delay)
