"""Pure parsers for what bikes send over a serial line: bytes in, values out, FrameError else.

Two formats, each with an encoder so tests (and fake bikes) can build frames:

- **Peloton serial** request/response: :func:`peloton_request`, :func:`parse_peloton_response`
  and :class:`PelotonSplitter`, which cuts a byte stream into candidate responses.
- **The Alleycat line protocol** for any other serial device: one reading a line, ASCII::

      <cadence>,<resistance>\\n

  ``cadence`` is a non-negative decimal number of rpm below 256; ``resistance`` is a decimal
  number, possibly negative (the bike's own level). Spaces around either number and a ``\\r``
  before the ``\\n`` are allowed; blank lines are ignored; a line is at most 64 bytes. Examples:
  ``72,40``, ``61.5, 52.25\\r\\n``. Anything else is malformed: :func:`parse_reading_line`.

Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from alleycat_rider.sensors.frames import FrameError, check_cadence

#: The longest line the line protocol accepts, terminator excluded.
MAX_LINE_LENGTH = 64


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
