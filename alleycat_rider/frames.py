"""Pure parsers for what bikes send: bytes in, values out, :class:`FrameError` on anything else.

Four formats, each with an encoder so tests (and fake bikes) can build frames:

- **FTMS Indoor Bike Data** (BLE characteristic 0x2AD2): :func:`parse_indoor_bike_data`.
- **CSC Measurement** (BLE characteristic 0x2A5B): :func:`parse_csc_measurement`, and
  :class:`CrankCadence`, which turns cumulative crank revolutions into rpm.
- **Peloton serial** request/response: :func:`peloton_request`, :func:`parse_peloton_response`
  and :class:`PelotonSplitter`, which cuts a byte stream into candidate responses.
- **The Alleycat line protocol** for any other serial device: one reading a line, ASCII::

      <cadence>,<resistance>\\n

  ``cadence`` is a non-negative decimal number of rpm below 256; ``resistance`` is a decimal
  number, possibly negative (the bike's own level). Spaces around either number and a ``\\r``
  before the ``\\n`` are allowed; blank lines are ignored; a line is at most 64 bytes. Examples:
  ``72,40``, ``61.5, 52.25\\r\\n``. Anything else is malformed: :func:`parse_reading_line`.

Every multi-byte BLE field is little-endian. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import Any

#: Cadences at or above this are sensor glitches, not riders (qdomyos-zwift drops them too).
MAX_CADENCE_RPM = 256.0
#: The longest line the line protocol accepts, terminator excluded.
MAX_LINE_LENGTH = 64


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


# ---------------------------------------------------------------------------------------------
# Peloton serial


class PelotonCode(IntEnum):
    """What the head unit asks the Peloton bike for."""

    CADENCE = 0x41
    """Whole rpm."""
    POWER = 0x44
    """Tenths of a watt."""
    RESISTANCE = 0x4A
    """A raw value, mapped to a level through a per-bike table."""


_REQUEST_START, _REQUEST_END = 0xF5, 0xF6
_RESPONSE_START, _RESPONSE_END = 0xF1, 0xF6
#: More digits than any reading has: a longer announced length means we are out of step.
MAX_PELOTON_DIGITS = 8


@dataclass(frozen=True, slots=True)
class PelotonResponse:
    """The bike's answer to one request."""

    code: int
    value: int
    """The decimal value the digits spell (for power, in tenths of a watt)."""


def peloton_request(code: int) -> bytes:
    """The four bytes the head unit sends to ask for ``code``: ``F5 code sum F6``."""
    return bytes([_REQUEST_START, code, (_REQUEST_START + code) & 0xFF, _REQUEST_END])


def parse_peloton_request(frame: bytes) -> int:
    """The code a request asks for (what a fake bike needs).

    Raises:
        FrameError: ``frame`` is not a well-formed request.
    """
    if len(frame) != 4 or frame[0] != _REQUEST_START or frame[3] != _REQUEST_END:
        raise FrameError(f"not a Peloton request: {bytes(frame).hex(' ')}")
    if frame[2] != (_REQUEST_START + frame[1]) & 0xFF:
        raise FrameError(f"bad checksum in Peloton request: {bytes(frame).hex(' ')}")
    return frame[1]


def peloton_response(code: int, value: int) -> bytes:
    """The bike's answer: ``F1 code n <n ASCII digits, least significant first> sum F6``."""
    if value < 0:
        raise ValueError("Peloton values are never negative")
    digits = str(value)[::-1].encode("ascii")
    head = bytes([_RESPONSE_START, code, len(digits)]) + digits
    return head + bytes([sum(head) & 0xFF, _RESPONSE_END])


def parse_peloton_response(frame: bytes) -> PelotonResponse:
    """Parse one complete response, checksum verified.

    Raises:
        FrameError: ``frame`` is not exactly one well-formed response.
    """
    frame = bytes(frame)
    if len(frame) < 6 or frame[0] != _RESPONSE_START:
        raise FrameError(f"not a Peloton response: {frame[:16].hex(' ')}")
    count = frame[2]
    if not 1 <= count <= MAX_PELOTON_DIGITS or len(frame) != count + 5:
        raise FrameError(f"Peloton response length does not match its digit count {count}")
    if frame[-1] != _RESPONSE_END:
        raise FrameError("Peloton response does not end with F6")
    if frame[-2] != sum(frame[:-2]) & 0xFF:
        raise FrameError(f"bad checksum in Peloton response: {frame.hex(' ')}")
    digits = frame[3:-2]
    if not all(0x30 <= d <= 0x39 for d in digits):
        raise FrameError(f"Peloton response digits are not ASCII digits: {digits.hex(' ')}")
    return PelotonResponse(frame[1], int(digits[::-1].decode("ascii")))


class PelotonSplitter:
    """Cuts the serial byte stream into chunks, each one candidate response or one run of noise.

    Every chunk goes to :func:`parse_peloton_response`: noise fails it and is counted there, so
    the splitter needs no opinion about what is valid beyond where a response must end.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete chunks they finish, oldest first."""
        self._buffer += data
        chunks: list[bytes] = []
        while self._buffer:
            start = self._buffer.find(_RESPONSE_START)
            if start != 0:
                end = len(self._buffer) if start < 0 else start
                chunks.append(bytes(self._buffer[:end]))
                del self._buffer[:end]
                continue
            if len(self._buffer) < 3:
                break
            count = self._buffer[2]
            if not 1 <= count <= MAX_PELOTON_DIGITS:
                # A stray F1 in noise: give up on it alone and look for the next one.
                chunks.append(bytes(self._buffer[:1]))
                del self._buffer[:1]
                continue
            size = count + 5
            if len(self._buffer) < size:
                break
            chunks.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return chunks

    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete chunk."""
        return bytes(self._buffer)

    def clear(self) -> bytes:
        """Drop and return the pending bytes (a response that never finished)."""
        pending = bytes(self._buffer)
        self._buffer.clear()
        return pending


# ---------------------------------------------------------------------------------------------
# The line protocol

_LINE_RE = re.compile(rb"[ \t]*(\d+(?:\.\d+)?)[ \t]*,[ \t]*(-?\d+(?:\.\d+)?)[ \t]*\r?")


def parse_reading_line(line: bytes) -> tuple[float, float]:
    """Parse one line of the line protocol (without its ``\\n``) into (cadence, resistance).

    Raises:
        FrameError: the line is not ``<cadence>,<resistance>`` or the cadence is out of range.
    """
    if len(line) > MAX_LINE_LENGTH:
        raise FrameError(f"line longer than {MAX_LINE_LENGTH} bytes")
    match = _LINE_RE.fullmatch(line)
    if match is None:
        raise FrameError(f"not '<cadence>,<resistance>': {bytes(line)[:MAX_LINE_LENGTH]!r}")
    return check_cadence(float(match[1])), float(match[2])


def encode_reading_line(cadence: float, resistance: float) -> bytes:
    """One line of the line protocol, as a device would send it."""
    return f"{cadence:g},{resistance:g}\n".encode("ascii")


class LineSplitter:
    """Cuts a byte stream into lines; a line longer than the protocol allows comes out cut.

    The cut part (more than :data:`MAX_LINE_LENGTH` bytes) fails :func:`parse_reading_line`, and
    the rest of that line is dropped, so a device sending noise without newlines cannot make the
    reader's memory grow.
    """

    def __init__(self, *, skip_first: bool = False) -> None:
        """Args:
        skip_first: drop everything up to the first newline; after opening a port mid-stream
            the first line is usually the tail of one, and would read as a wrong value.
        """
        self._buffer = bytearray()
        self._discarding = skip_first

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the non-blank lines they complete, without ``\\n``."""
        self._buffer += data
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_LENGTH:
                    if not self._discarding:
                        lines.append(bytes(self._buffer[: MAX_LINE_LENGTH + 1]))
                    self._discarding = True
                    self._buffer.clear()
                return lines
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
            elif line.strip():
                lines.append(line)
