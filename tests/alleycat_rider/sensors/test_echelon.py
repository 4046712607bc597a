"""Echelon bikes: the packet decoder with literal packets and random bytes, and the sensor fed
notifications through the handler bleak would call.

No radio here. What the sensor does on a connected bike is checked against a stand-in for
bleak's client that records the characteristics subscribed to and the bytes written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from bleak.backends.scanner import AdvertisementData
from hypothesis import given
from hypothesis import strategies as st

from alleycat_rider.errors import SensorError
from alleycat_rider.sensors import Reading, SensorOptions
from alleycat_rider.sensors.ble import NotificationHandler
from alleycat_rider.sensors.echelon import (
    ADVERTISED_SERVICE,
    DATA_CHARACTERISTIC,
    WRITE_CHARACTERISTIC,
    EchelonSensor,
    is_echelon,
)
from alleycat_rider.sensors.echelon_frames import (
    ENABLE_NOTIFICATIONS,
    EchelonCadence,
    EchelonPacket,
    EchelonResistance,
    encode_cadence_packet,
    encode_resistance_packet,
    parse_echelon_packet,
)
from alleycat_rider.sensors.frames import FrameError
from tests.alleycat_rider.sensors.helpers import Clock

# D1: 60 s elapsed, distance 300, 78 rpm, no heart rate.
CADENCE_78 = bytes.fromhex("F0 D1 09 00 3C 00 00 01 2C 00 4E 00 81")
# D1: 600 s elapsed, distance 3000, 90 rpm, 140 bpm.
CADENCE_90 = bytes.fromhex("F0 D1 09 02 58 00 00 0B B8 00 5A 8C CD")
# D2: resistance level 17, then the lowest (1) and the highest (32).
LEVEL_17 = bytes.fromhex("F0 D2 01 11 D4")
LEVEL_1 = bytes.fromhex("F0 D2 01 01 C4")
LEVEL_32 = bytes.fromhex("F0 D2 01 20 E3")
# Well-formed packets of other types: the bike's acknowledgement, a poll.
ACK = bytes.fromhex("F0 D0 01 01 C2")
POLL = bytes.fromhex("F0 A0 01 05 96")
GARBAGE = [
    b"",
    b"\xf0",
    bytes.fromhex("F0 D2 01"),  # cut short
    bytes.fromhex("F0 D2 01 11 D5"),  # wrong checksum
    bytes.fromhex("F1 D2 01 11 D5"),  # wrong header
    bytes.fromhex("F0 D2 02 11 D5"),  # the length says 2
    bytes.fromhex("F0 D1 01 4E 00"),  # a cadence packet of the wrong size
    bytes.fromhex("F0 D2 01 21 E4"),  # level 33
    bytes.fromhex("F0 D1 09 00 3C 00 00 01 2C 01 2C 00 60"),  # 300 rpm
]


# --- The decoder ------------------------------------------------------------------------------


def test_cadence_packets_read_as_the_bike_sent_them() -> None:
    assert parse_echelon_packet(CADENCE_78) == EchelonCadence(
        elapsed_s=60, distance_raw=300, cadence_rpm=78.0, heart_rate_bpm=0
    )
    assert parse_echelon_packet(CADENCE_90) == EchelonCadence(
        elapsed_s=600, distance_raw=3000, cadence_rpm=90.0, heart_rate_bpm=140
    )


def test_resistance_levels_map_onto_0_to_100() -> None:
    levels = [parse_echelon_packet(data) for data in (LEVEL_1, LEVEL_17, LEVEL_32)]

    assert levels == [EchelonResistance(1), EchelonResistance(17), EchelonResistance(32)]
    assert [level.resistance for level in levels] == [3.125, 53.125, 100.0]  # type: ignore[union-attr]


def test_other_packets_are_recognised_but_carry_nothing() -> None:
    assert parse_echelon_packet(ACK) == EchelonPacket(0xD0, b"\x01")
    assert parse_echelon_packet(POLL) == EchelonPacket(0xA0, b"\x05")
    assert parse_echelon_packet(ENABLE_NOTIFICATIONS) == EchelonPacket(0xB0, b"\x01")


@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_truncated_corrupt_and_absurd_packets_are_malformed(data: bytes) -> None:
    with pytest.raises(FrameError):
        parse_echelon_packet(data)


def test_literal_packets_encode_back_to_the_same_bytes() -> None:
    cadence = parse_echelon_packet(CADENCE_90)
    assert isinstance(cadence, EchelonCadence)
    assert encode_cadence_packet(cadence) == CADENCE_90
    assert encode_resistance_packet(17) == LEVEL_17


@given(st.binary(max_size=24))
def test_echelon_decoder_raises_only_frame_error(data: bytes) -> None:
    try:
        parse_echelon_packet(data)
    except FrameError:
        pass


@given(st.integers(0, 255), st.binary(max_size=20))
def test_any_well_framed_packet_parses_or_is_refused_for_its_content(
    packet_type: int, payload: bytes
) -> None:
    body = bytes([0xF0, packet_type, len(payload)]) + payload
    data = body + bytes([sum(body) & 0xFF])
    try:
        packet = parse_echelon_packet(data)
    except FrameError:
        assert packet_type in (0xD1, 0xD2)  # the wrong size, or a value out of range
        return
    if isinstance(packet, EchelonPacket):
        assert packet == EchelonPacket(packet_type, payload)


# --- The sensor, through the notification seam ------------------------------------------------


OPTIONS = SensorOptions(kind="echelon", address="AA:BB:CC:DD:EE:FF")


def test_cadence_and_resistance_packets_make_one_reading() -> None:
    clock = Clock()
    sensor = EchelonSensor(OPTIONS, clock=clock)
    handle = sensor.echelon_handler()

    handle(None, bytearray(LEVEL_17))
    clock.now += 0.5
    handle(None, bytearray(CADENCE_78))

    assert sensor.read(clock.now) == Reading(78.0, 53.125, clock.now)
    assert sensor.stats.frames == 2


def test_resistance_sent_once_is_kept_while_cadence_changes() -> None:
    clock = Clock()
    sensor = EchelonSensor(OPTIONS, clock=clock)
    handle = sensor.echelon_handler()
    handle(None, bytearray(LEVEL_32))

    for data in (CADENCE_78, CADENCE_90):
        clock.now += 1
        handle(None, bytearray(data))

    assert sensor.read(clock.now) == Reading(90.0, 100.0, clock.now)


def test_garbage_is_counted_other_packets_ignored_and_the_reading_kept() -> None:
    clock = Clock()
    sensor = EchelonSensor(OPTIONS, clock=clock)
    handle = sensor.echelon_handler()
    handle(None, bytearray(CADENCE_78))
    handle(None, bytearray(LEVEL_17))

    for data in [*GARBAGE, ACK, POLL]:
        handle(None, bytearray(data))

    assert sensor.read(clock.now) == Reading(78.0, 53.125, clock.now)
    stats = sensor.stats
    assert (stats.frames, stats.malformed, stats.ignored) == (2, len(GARBAGE), 2)


@given(st.lists(st.binary(max_size=16), max_size=10))
def test_whatever_the_bike_notifies_is_counted_once_and_never_raises(
    payloads: list[bytes],
) -> None:
    sensor = EchelonSensor(OPTIONS, clock=Clock())
    handle = sensor.echelon_handler()

    for data in payloads:
        handle(None, bytearray(data))

    stats = sensor.stats
    assert stats.frames + stats.malformed + stats.ignored == len(payloads)


def test_bike_that_stops_notifying_reads_zero_after_three_seconds_and_is_counted() -> None:
    clock = Clock()
    sensor = EchelonSensor(OPTIONS, clock=clock)
    handle = sensor.echelon_handler()
    handle(None, bytearray(LEVEL_17))
    handle(None, bytearray(CADENCE_90))

    assert sensor.read(clock.now + 3.5) == Reading(0.0, 53.125, clock.now)
    assert sensor.stats.dropouts == 1


# --- Starting the bike's stream, on a connected client ----------------------------------------


@dataclass
class Characteristic:
    uuid: str


@dataclass
class Service:
    characteristics: list[Characteristic]


@dataclass
class RecordingClient:
    """Stands in for a connected ``BleakClient``: offers characteristics, records the calls."""

    offered: list[str]
    calls: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    handlers: dict[str, NotificationHandler] = field(default_factory=dict)

    @property
    def services(self) -> list[Service]:
        return [Service([Characteristic(uuid) for uuid in self.offered])]

    async def start_notify(self, char_specifier: str, callback: NotificationHandler) -> None:
        self.calls.append(("notify", char_specifier, None))
        self.handlers[char_specifier] = callback

    async def write_gatt_char(
        self, char_specifier: str, data: bytes | bytearray, response: bool | None = None
    ) -> None:
        assert response is True  # the bike's own app writes with a response
        self.calls.append(("write", char_specifier, bytes(data)))


ECHELON_CHARACTERISTICS = [
    "0bf669f2-45f2-11e7-9598-0800200c9a66",
    "0bf669f3-45f2-11e7-9598-0800200c9a66",
    "0BF669F4-45F2-11E7-9598-0800200C9A66",
]


def test_notifications_go_on_then_the_bike_is_asked_to_send() -> None:
    clock = Clock()
    sensor = EchelonSensor(OPTIONS, clock=clock)
    client = RecordingClient(ECHELON_CHARACTERISTICS)

    asyncio.run(sensor.subscribe(client))  # type: ignore[arg-type]

    assert client.calls == [
        ("notify", DATA_CHARACTERISTIC, None),
        ("write", WRITE_CHARACTERISTIC, bytes.fromhex("F0 B0 01 01 A2")),
    ]
    client.handlers[DATA_CHARACTERISTIC](None, bytearray(CADENCE_90))
    assert sensor.read(clock.now).cadence == 90.0


def test_a_device_without_echelons_service_is_refused_with_advice() -> None:
    sensor = EchelonSensor(SensorOptions(kind="echelon"), clock=Clock())
    client = RecordingClient(["00002ad2-0000-1000-8000-00805f9b34fb"])

    with pytest.raises(SensorError, match="is it an Echelon bike"):
        asyncio.run(sensor.subscribe(client))  # type: ignore[arg-type]
    assert client.calls == []


def advert(name: str | None, services: list[str]) -> AdvertisementData:
    return AdvertisementData(name, {}, {}, services, None, -60, ())


def test_scan_recognises_echelon_bikes_by_name_or_service() -> None:
    assert is_echelon(advert("ECH-SPORT-1234", []))
    assert is_echelon(advert("ECHEX-5s", []))
    assert is_echelon(advert(None, [ADVERTISED_SERVICE.upper()]))
    assert not is_echelon(advert("Zwift Hub", ["00001826-0000-1000-8000-00805f9b34fb"]))
