"""Pure parsers for what bikes send over BLE: bytes in, values out, :class:`FrameError` else.

Two formats, each with an encoder so tests (and fake bikes) can build frames:

- **FTMS Indoor Bike Data** (BLE characteristic 0x2AD2): :func:`parse_indoor_bike_data`.
- **CSC Measurement** (BLE characteristic 0x2A5B): :func:`parse_csc_measurement`, and
  :class:`CrankCadence`, which turns cumulative crank revolutions into rpm.

The serial formats (Peloton, the line protocol) are in :mod:`alleycat_rider.sensors.serial_frames`;
:class:`FrameError` and :func:`check_cadence` are shared by both.

Every multi-byte BLE field is little-endian. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

#: Cadences at or above this are sensor glitches, not riders (qdomyos-zwift drops them too).
MAX_CADENCE_RPM = 256.0


class FrameError(ValueError):
    """A frame or line that does not follow its format; the reader counts and skips it."""


def check_cadence(rpm: float) -> float:
    """Return ``rpm`` if a rider could pedal it, else raise :class:`FrameError`."""
    if not 0.0 <= rpm < MAX_CADENCE_RPM:
        raise FrameError(f"cadence {rpm} rpm is out of range 0..{MAX_CADENCE_RPM:g}")
    return rpm


class _Cursor:
    """Reads little-endian integers from a frame, raising FrameError when it runs out."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def uint(self, size: int, *, signed: bool = False) -> int:
        end = self._pos + size
        if end > len(self._data):
            raise FrameError(f"frame ends at byte {len(self._data)}, a field needs {end}")
        value = int.from_bytes(self._data[self._pos : end], "little", signed=signed)
        self._pos = end
        return value


# ---------------------------------------------------------------------------------------------
# FTMS Indoor Bike Data


@dataclass(frozen=True, slots=True, kw_only=True)
class IndoorBikeData:
    """One FTMS Indoor Bike Data notification; a field is ``None`` when the bike left it out."""

    more_data: bool = False
    """Flag bit 0: the record continues in another notification (and speed is absent)."""
    speed_kmh: float | None = None
    average_speed_kmh: float | None = None
    cadence_rpm: float | None = None
    average_cadence_rpm: float | None = None
    distance_m: int | None = None
    resistance: float | None = None
    """Resistance level as the bike reports it (some bikes report ten times the level)."""
    power_w: int | None = None
    average_power_w: int | None = None
    total_energy_kcal: int | None = None
    energy_per_hour_kcal: int | None = None
    energy_per_minute_kcal: int | None = None
    heart_rate_bpm: int | None = None
    metabolic_equivalent: float | None = None
    elapsed_time_s: int | None = None
    remaining_time_s: int | None = None

    def merge(self, later: IndoorBikeData) -> IndoorBikeData:
        """This record updated with the fields ``later`` carries (parts of a split record)."""
        changes = {
            f.name: getattr(later, f.name)
            for f in fields(later)
            if f.name != "more_data" and getattr(later, f.name) is not None
        }
        return replace(self, more_data=later.more_data, **changes)


# (flag bit, field name, size in bytes, signed, divisor, "not available" raw value); in the
# order FTMS lays them out. Bit 0 is handled apart because its meaning is inverted.
_FTMS_FIELDS: tuple[tuple[int, str, int, bool, int, int | None], ...] = (
    (1, "average_speed_kmh", 2, False, 100, None),
    (2, "cadence_rpm", 2, False, 2, None),
    (3, "average_cadence_rpm", 2, False, 2, None),
    (4, "distance_m", 3, False, 1, None),
    (5, "resistance", 2, True, 1, None),
    (6, "power_w", 2, True, 1, None),
    (7, "average_power_w", 2, True, 1, None),
    (8, "total_energy_kcal", 2, False, 1, 0xFFFF),
    (8, "energy_per_hour_kcal", 2, False, 1, 0xFFFF),
    (8, "energy_per_minute_kcal", 1, False, 1, 0xFF),
    (9, "heart_rate_bpm", 1, False, 1, None),
    (10, "metabolic_equivalent", 1, False, 10, None),
    (11, "elapsed_time_s", 2, False, 1, None),
    (12, "remaining_time_s", 2, False, 1, None),
)
_FLOAT_FIELDS = frozenset(
    {
        "average_speed_kmh",
        "cadence_rpm",
        "average_cadence_rpm",
        "resistance",
        "metabolic_equivalent",
    }
)


def _ftms_value(name: str, raw: int, divisor: int) -> float | int:
    if name in _FLOAT_FIELDS:
        return raw / divisor
    return raw


def parse_indoor_bike_data(data: bytes) -> IndoorBikeData:
    """Parse one FTMS Indoor Bike Data notification.

    Bytes after the last field the flags announce are ignored: fields added by later versions
    of the specification come after the known ones.

    Raises:
        FrameError: the frame is shorter than its flags require.
    """
    cursor = _Cursor(bytes(data))
    flags = cursor.uint(2)
    more_data = bool(flags & 1)
    # Any: each value's type follows from its row in _FTMS_FIELDS.
    values: dict[str, Any] = {}
    if not more_data:
        values["speed_kmh"] = cursor.uint(2) / 100
    for bit, name, size, signed, divisor, unavailable in _FTMS_FIELDS:
        if flags & (1 << bit):
            raw = cursor.uint(size, signed=signed)
            values[name] = None if raw == unavailable else _ftms_value(name, raw, divisor)
    return replace(IndoorBikeData(more_data=more_data), **values)


def encode_indoor_bike_data(record: IndoorBikeData) -> bytes:
    """The notification a bike would send for ``record`` (the inverse of the parser)."""
    if record.more_data and record.speed_kmh is not None:
        raise ValueError("speed rides only in the last part of a record (more_data False)")
    flags = 1 if record.more_data else 0
    body = b""
    if not record.more_data:
        body += round((record.speed_kmh or 0.0) * 100).to_bytes(2, "little")
    energy = (record.total_energy_kcal, record.energy_per_hour_kcal, record.energy_per_minute_kcal)
    energy_present = any(value is not None for value in energy)
    for bit, name, size, signed, divisor, unavailable in _FTMS_FIELDS:
        value = getattr(record, name)
        if bit == 8:
            if not energy_present:
                continue
            raw = value if value is not None else unavailable or 0
        elif value is None:
            continue
        else:
            raw = round(value * divisor)
        flags |= 1 << bit
        body += int(raw).to_bytes(size, "little", signed=signed)
    return flags.to_bytes(2, "little") + body


# ---------------------------------------------------------------------------------------------
# CSC Measurement


@dataclass(frozen=True, slots=True, kw_only=True)
class CscMeasurement:
    """One CSC Measurement notification; event times count 1/1024 s and wrap at 65536."""

    wheel_revolutions: int | None = None
    wheel_event_time: int | None = None
    crank_revolutions: int | None = None
    crank_event_time: int | None = None


def parse_csc_measurement(data: bytes) -> CscMeasurement:
    """Parse one CSC Measurement notification.

    Raises:
        FrameError: the frame is shorter than its flags require.
    """
    cursor = _Cursor(bytes(data))
    flags = cursor.uint(1)
    wheel_revs = wheel_time = crank_revs = crank_time = None
    if flags & 0x01:
        wheel_revs, wheel_time = cursor.uint(4), cursor.uint(2)
    if flags & 0x02:
        crank_revs, crank_time = cursor.uint(2), cursor.uint(2)
    return CscMeasurement(
        wheel_revolutions=wheel_revs,
        wheel_event_time=wheel_time,
        crank_revolutions=crank_revs,
        crank_event_time=crank_time,
    )


def encode_csc_measurement(measurement: CscMeasurement) -> bytes:
    """The notification a sensor would send for ``measurement``."""
    flags = 0
    body = b""
    if measurement.wheel_revolutions is not None:
        flags |= 0x01
        body += measurement.wheel_revolutions.to_bytes(4, "little")
        body += (measurement.wheel_event_time or 0).to_bytes(2, "little")
    if measurement.crank_revolutions is not None:
        flags |= 0x02
        body += measurement.crank_revolutions.to_bytes(2, "little")
        body += (measurement.crank_event_time or 0).to_bytes(2, "little")
    return bytes([flags]) + body


class CrankCadence:
    """Cadence from cumulative crank revolutions and their last event time, as CSC sends them.

    ``rpm = (Δrevs mod 65536) × 60 × 1024 / (Δtime mod 65536)``. A repeated event time means no
    new crank event: the previous cadence holds until ``stale_after`` seconds pass without one,
    then the cadence is 0, as a bike's display shows when the rider stops.
    """

    #: Event times wrap every 64 s; across a longer gap the difference means nothing.
    _WRAP_SECONDS = 64.0

    def __init__(self, stale_after: float = 2.0) -> None:
        """Args:
        stale_after: seconds without a new crank event after which the cadence is 0.
        """
        self._stale_after = stale_after
        self._revolutions: int | None = None
        self._event_time = 0
        self._event_at = 0.0
        self._cadence = 0.0

    def update(self, revolutions: int, event_time: int, now: float) -> float:
        """Take one measurement received at ``now`` (monotonic seconds); return the cadence.

        Raises:
            FrameError: the measurement implies an impossible cadence (it is still used as the
                reference for the next one, so one glitch costs one reading).
        """
        if self._revolutions is None or now - self._event_at >= self._WRAP_SECONDS:
            self._remember(revolutions, event_time, now)
            self._cadence = 0.0
            return self._cadence
        elapsed_ticks = (event_time - self._event_time) & 0xFFFF
        if elapsed_ticks == 0:
            if now - self._event_at >= self._stale_after:
                self._cadence = 0.0
            return self._cadence
        revs = (revolutions - self._revolutions) & 0xFFFF
        self._remember(revolutions, event_time, now)
        rpm = revs * 60 * 1024 / elapsed_ticks
        self._cadence = check_cadence(rpm)
        return self._cadence

    def _remember(self, revolutions: int, event_time: int, now: float) -> None:
        self._revolutions = revolutions
        self._event_time = event_time
        self._event_at = now
