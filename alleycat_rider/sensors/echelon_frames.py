"""Echelon bikes' proprietary GATT packets: bytes in, values out, no I/O.

Every packet is ``F0 <type> <length> <payload: length bytes> <checksum>``, the checksum being the
sum of the bytes before it, modulo 256. The bike sends, on characteristic ``...f4``:

- ``D1``, 13 bytes: elapsed seconds (bytes 3-4, big-endian), distance (5-8), cadence (9-10,
  big-endian rpm), heart rate (11).
- ``D2``, 5 bytes: the resistance level (byte 3, 1 to 32), sent only when it changes.

The agent writes ``F0 B0 01 01 A2`` to ``...f2`` once notifications are on, which makes the bike
start sending them.
"""

from __future__ import annotations

from dataclasses import dataclass

from alleycat_rider.sensors.frames import FrameError, check_cadence

#: The first byte of every packet.
HEADER = 0xF0
#: Cadence (and time, distance, heart rate) packets.
CADENCE_TYPE = 0xD1
#: Resistance packets, sent when the level changes.
RESISTANCE_TYPE = 0xD2
#: The highest resistance level; the message's resistance 100.
TOP_LEVEL = 32
#: What to write to the bike to start its stream of packets.
ENABLE_NOTIFICATIONS = bytes.fromhex("F0 B0 01 01 A2")


@dataclass(frozen=True, slots=True)
class EchelonPacket:
    """A well-formed packet of a type this sensor does not read (an acknowledgement, ...)."""

    type: int
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EchelonCadence:
    """A ``D1`` packet."""

    elapsed_s: int
    distance_raw: int
    """Bytes 5-8, big-endian; sources disagree on its unit."""
    cadence_rpm: float
    heart_rate_bpm: int


@dataclass(frozen=True, slots=True)
class EchelonResistance:
    """A ``D2`` packet."""

    level: int
    """1 to 32 (0 is accepted: some bikes start there)."""

    @property
    def resistance(self) -> float:
        """The level on the message's 0-100 scale: ``level x 100 / 32``, so level 32 is 100."""
        return self.level * 100 / TOP_LEVEL


def checksum(data: bytes) -> int:
    """The sum of ``data``'s bytes modulo 256, as the bike computes it."""
    return sum(data) & 0xFF


def frame_packet(packet_type: int, payload: bytes) -> bytes:
    """The bytes of a packet: header, type, length, payload and checksum."""
    body = bytes([HEADER, packet_type, len(payload)]) + payload
    return body + bytes([checksum(body)])


def parse_echelon_packet(
    data: bytes,
) -> EchelonCadence | EchelonResistance | EchelonPacket:
    """Parse one notification from the bike.

    Raises:
        FrameError: not a packet (header, length or checksum wrong), a cadence or resistance
            packet of the wrong size, or a value no bike can have.
    """
    data = bytes(data)
    if len(data) < 4 or data[0] != HEADER:
        raise FrameError(f"not an Echelon packet: {data.hex(' ')}")
    packet_type, length = data[1], data[2]
    if len(data) != length + 4:
        raise FrameError(f"Echelon packet says {length} payload bytes, has {len(data) - 4}")
    if checksum(data[:-1]) != data[-1]:
        raise FrameError(f"Echelon packet checksum {data[-1]:02x}, not {checksum(data[:-1]):02x}")
    payload = data[3:-1]
    if packet_type == CADENCE_TYPE:
        if length != 9:
            raise FrameError(f"a D1 packet has 9 payload bytes, not {length}")
        return EchelonCadence(
            elapsed_s=int.from_bytes(payload[0:2], "big"),
            distance_raw=int.from_bytes(payload[2:6], "big"),
            cadence_rpm=check_cadence(float(int.from_bytes(payload[6:8], "big"))),
            heart_rate_bpm=payload[8],
        )
    if packet_type == RESISTANCE_TYPE:
        if length != 1:
            raise FrameError(f"a D2 packet has 1 payload byte, not {length}")
        if payload[0] > TOP_LEVEL:
            raise FrameError(f"resistance level {payload[0]} is out of range 0..{TOP_LEVEL}")
        return EchelonResistance(payload[0])
    return EchelonPacket(packet_type, payload)


def encode_cadence_packet(packet: EchelonCadence) -> bytes:
    """The ``D1`` packet a bike would send (tests, fake bikes)."""
    payload = packet.elapsed_s.to_bytes(2, "big") + packet.distance_raw.to_bytes(4, "big")
    payload += round(packet.cadence_rpm).to_bytes(2, "big") + bytes([packet.heart_rate_bpm])
    return frame_packet(CADENCE_TYPE, payload)


def encode_resistance_packet(level: int) -> bytes:
    """The ``D2`` packet a bike would send at ``level``."""
    return frame_packet(RESISTANCE_TYPE, bytes([level]))
