"""Keiser M-series broadcasts: the decoder with literal frames and random bytes, and the sensor
fed advertisements through the callback bleak's scanner would call.

The frames are the manufacturer data as bleak hands it over (company id 0x0102 stripped), laid
out byte by byte from Keiser's broadcast format; there is no radio here.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from hypothesis import given
from hypothesis import strategies as st

from alleycat_rider.errors import SensorError
from alleycat_rider.sensors import Reading, SensorOptions, open_sensor
from alleycat_rider.sensors import keiser as keiser_module
from alleycat_rider.sensors.frames import FrameError
from alleycat_rider.sensors.keiser import KeiserSensor
from alleycat_rider.sensors.keiser_frames import (
    KEISER_COMPANY_ID,
    BikeChooser,
    KeiserFrame,
    encode_keiser_frame,
    gear_to_resistance,
    parse_keiser_frame,
)
from tests.alleycat_rider.sensors.helpers import Clock, wait_until

# Console 6.30, real time, bike 7: 85.3 rpm, 132 bpm, 187 W, 42 kcal, 12:34, 5.2 km, gear 12.
M3I_630 = bytes.fromhex("06 30 00 07 55 03 28 05 BB 00 2A 00 0C 22 34 80 0C")
# Console 6.06 (before gears were broadcast): 80 rpm, no heart rate, 100 W, 3:05, 2.5 miles.
M3I_606 = bytes.fromhex("06 06 00 07 20 03 00 00 64 00 10 00 03 05 19 00")
# Console 6.24, as Keiser's M3i simulator script broadcasts at rest: bike 1, gear 1.
M3I_624_AT_REST = bytes.fromhex("06 24 00 01 00 00 00 00 00 00 00 00 00 00 00 00 01")
# Console 6.32, real time in an interval (data type 129 = interval 1): bike 7, 92.7 rpm, gear 18.
M3I_632_INTERVAL = bytes.fromhex("06 32 81 07 9F 03 00 00 F5 00 30 00 14 00 F4 01 12")
# Review mode (the averages after a ride), data types 1 and 255.
M3I_630_REVIEW = bytes.fromhex("06 30 01 07 4C 03 00 00 AA 00 2A 00 0C 22 34 80 0C")
M3I_630_REVIEW_255 = bytes.fromhex("06 30 FF 07 4C 03 00 00 AA 00 2A 00 0C 22 34 80 0C")
# An M7i console (version 1.05): a layout of its own, not read.
M7I = bytes.fromhex("01 05 00 07 55 03 28 05 BB 00 2A 00 0C 22 34 80 0C")
# Frames from bike 7 that decode to nonsense: 6553.5 rpm; gear 30.
ABSURD_CADENCE = bytes.fromhex("06 30 00 07 FF FF 00 00 BB 00 2A 00 0C 22 34 80 0C")
ABSURD_GEAR = bytes.fromhex("06 30 00 07 55 03 00 00 BB 00 2A 00 0C 22 34 80 1E")
TRUNCATED = [b"", b"\x06", M3I_630[:4], M3I_630[:15], M3I_630 + b"\x00\x00"]

BIKE_7 = "F0:00:00:00:00:07"
BIKE_9 = "F0:00:00:00:00:09"


def frame_of_bike(equipment_id: int, cadence: float, gear: int) -> bytes:
    return encode_keiser_frame(
        KeiserFrame(
            version="6.30",
            data_type=0,
            equipment_id=equipment_id,
            cadence_rpm=cadence,
            heart_rate_bpm=None,
            power_w=150,
            energy_kcal=10,
            elapsed_s=300,
            distance=3.0,
            distance_unit="km",
            gear=gear,
        )
    )


# --- The decoder ------------------------------------------------------------------------------


def test_console_630_real_time_frame_reads_as_the_bike_sent_it() -> None:
    frame = parse_keiser_frame(M3I_630)

    assert frame == KeiserFrame(
        version="6.30",
        data_type=0,
        equipment_id=7,
        cadence_rpm=85.3,
        heart_rate_bpm=132.0,
        power_w=187,
        energy_kcal=42,
        elapsed_s=754,
        distance=5.2,
        distance_unit="km",
        gear=12,
    )
    assert frame.real_time
    assert frame.resistance() == 50.0


def test_console_606_frame_has_no_gear_and_counts_miles() -> None:
    frame = parse_keiser_frame(M3I_606)

    assert (frame.version, frame.cadence_rpm, frame.power_w) == ("6.06", 80.0, 100)
    assert (frame.heart_rate_bpm, frame.gear, frame.resistance()) == (None, None, None)
    assert (frame.distance, frame.distance_unit, frame.elapsed_s) == (2.5, "mi", 185)


def test_keisers_simulator_frame_is_bike_1_at_rest_in_gear_1() -> None:
    frame = parse_keiser_frame(M3I_624_AT_REST)

    assert (frame.version, frame.equipment_id, frame.cadence_rpm) == ("6.24", 1, 0.0)
    assert frame.real_time
    assert frame.resistance() == pytest.approx(100 / 24)


def test_interval_frames_are_real_time() -> None:
    frame = parse_keiser_frame(M3I_632_INTERVAL)

    assert frame.real_time
    assert (frame.data_type - 128, frame.cadence_rpm, frame.gear) == (1, 92.7, 18)
    assert (frame.distance, frame.distance_unit) == (50.0, "mi")


@pytest.mark.parametrize("data", [M3I_630_REVIEW, M3I_630_REVIEW_255])
def test_review_mode_frames_are_not_real_time(data: bytes) -> None:
    assert not parse_keiser_frame(data).real_time


def test_the_gear_maps_onto_0_to_100() -> None:
    assert [gear_to_resistance(gear) for gear in (0, 1, 12, 24)] == [0.0, 100 / 24, 50.0, 100.0]
    with pytest.raises(FrameError, match="gear 25"):
        gear_to_resistance(25)


@pytest.mark.parametrize("data", [M7I, *TRUNCATED], ids=["m7i", "0", "1", "4", "15", "19"])
def test_frames_of_other_consoles_and_lengths_are_malformed(data: bytes) -> None:
    with pytest.raises(FrameError):
        parse_keiser_frame(data)


def test_frames_that_decode_to_nonsense_fail_their_checks() -> None:
    with pytest.raises(FrameError, match="cadence"):
        parse_keiser_frame(ABSURD_CADENCE).checked_cadence()
    with pytest.raises(FrameError, match="gear"):
        parse_keiser_frame(ABSURD_GEAR).resistance()


@pytest.mark.parametrize("data", [M3I_630, M3I_606, M3I_624_AT_REST, M3I_632_INTERVAL])
def test_literal_frames_encode_back_to_the_same_bytes(data: bytes) -> None:
    assert encode_keiser_frame(parse_keiser_frame(data)) == data


@given(st.binary(max_size=24))
def test_keiser_decoder_raises_only_frame_error(data: bytes) -> None:
    try:
        frame = parse_keiser_frame(data)
        frame.checked_cadence()
        frame.resistance()
    except FrameError:
        pass


# --- Choosing the bike ------------------------------------------------------------------------


def test_chooser_by_id_keeps_the_first_address_until_it_falls_silent() -> None:
    chooser = BikeChooser(equipment_id=7, address=None, lost_after=7.0)

    assert not chooser.claims(BIKE_9, 9, 0.0)
    assert chooser.claims(BIKE_7.lower(), 7, 0.0)
    assert not chooser.claims("F0:00:00:00:00:77", 7, 5.0)  # a second console set to 7
    assert chooser.claims(BIKE_7, 7, 6.0)
    assert chooser.claims("F0:00:00:00:00:77", 7, 14.0)  # bike swapped: the old one is gone
    assert chooser.address == "F0:00:00:00:00:77"


def test_chooser_passes_over_other_ids_unless_they_come_from_the_chosen_address() -> None:
    chooser = BikeChooser(equipment_id=7, address=None, lost_after=7.0)
    other_bike = frame_of_bike(9, cadence=80.0, gear=3)

    assert chooser.passes_over(BIKE_9, other_bike)
    assert not chooser.passes_over(BIKE_9, M3I_630)  # shows id 7: parsed and judged
    assert not chooser.passes_over(BIKE_9, b"\x06\x30")  # too short to show an id
    assert chooser.claims(BIKE_7, 7, 0.0)
    assert not chooser.passes_over(BIKE_7, other_bike)  # from the chosen bike: judged in full
    anyone = BikeChooser(equipment_id=None, address=None, lost_after=7.0)
    assert not anyone.passes_over(BIKE_9, other_bike)


def test_chooser_by_address_takes_that_device_only() -> None:
    chooser = BikeChooser(equipment_id=None, address=BIKE_9.lower(), lost_after=7.0)

    assert chooser.is_chosen_address(BIKE_9)
    assert not chooser.claims(BIKE_7, 7, 0.0)
    assert not chooser.claims(BIKE_7, 7, 100.0)
    assert chooser.claims(BIKE_9, 9, 100.0)


def test_chooser_with_id_and_address_needs_both() -> None:
    chooser = BikeChooser(equipment_id=7, address=BIKE_9, lost_after=7.0)

    assert not chooser.claims(BIKE_9, 9, 0.0)
    assert not chooser.claims(BIKE_7, 7, 0.0)
    assert chooser.claims(BIKE_9, 7, 0.0)


# --- The sensor, fed advertisements as bleak's scanner delivers them --------------------------


def advert(
    manufacturer_data: bytes | None, *, company: int = KEISER_COMPANY_ID, name: str = "M3"
) -> AdvertisementData:
    data = {} if manufacturer_data is None else {company: manufacturer_data}
    return AdvertisementData(
        local_name=name,
        manufacturer_data=data,
        service_data={},
        service_uuids=[],
        tx_power=None,
        rssi=-60,
        platform_data=(),
    )


def device(address: str) -> BLEDevice:
    return BLEDevice(address, "M3", None)


def keiser(
    clock: Clock, *, keiser_id: int | None = None, address: str | None = None
) -> KeiserSensor:
    options = SensorOptions(kind="keiser", keiser_id=keiser_id, address=address)
    return KeiserSensor(options, clock=clock)


def test_real_time_frame_reads_as_cadence_and_gear_on_0_to_100() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=7)
    handle = sensor.advertisement_handler()

    handle(device(BIKE_7), advert(M3I_630))

    assert sensor.read(clock.now) == Reading(85.3, 50.0, clock.now)
    assert sensor.stats.frames == 1


def test_two_bikes_advertising_at_once_the_chosen_one_is_read() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=9)
    handle = sensor.advertisement_handler()

    for second in range(5):
        clock.now += 0.3
        handle(device(BIKE_7), advert(frame_of_bike(7, cadence=60.0 + second, gear=6)))
        handle(device(BIKE_9), advert(frame_of_bike(9, cadence=90.0 + second, gear=18)))

    assert sensor.read(clock.now) == Reading(94.0, 75.0, clock.now)
    assert (sensor.stats.frames, sensor.stats.malformed, sensor.stats.ignored) == (5, 0, 0)


def test_two_bikes_the_one_at_the_address_is_read() -> None:
    clock = Clock()
    sensor = keiser(clock, address=BIKE_7.lower())
    handle = sensor.advertisement_handler()

    handle(device(BIKE_9), advert(frame_of_bike(9, cadence=90.0, gear=18)))
    handle(device(BIKE_7), advert(frame_of_bike(7, cadence=61.0, gear=12)))
    handle(device(BIKE_9), advert(frame_of_bike(9, cadence=91.0, gear=18)))

    assert sensor.read(clock.now) == Reading(61.0, 50.0, clock.now)


def test_review_mode_frames_are_ignored_and_counted() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=7)
    handle = sensor.advertisement_handler()
    handle(device(BIKE_7), advert(M3I_630))

    clock.now += 1
    handle(device(BIKE_7), advert(M3I_630_REVIEW))
    handle(device(BIKE_7), advert(M3I_630_REVIEW_255))

    assert sensor.read(clock.now) == Reading(85.3, 50.0, clock.now - 1)
    assert (sensor.stats.frames, sensor.stats.ignored) == (1, 2)


def test_garbage_from_the_chosen_bike_is_counted_and_the_reading_kept() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=7)
    handle = sensor.advertisement_handler()
    handle(device(BIKE_7), advert(M3I_630))

    for data in [*TRUNCATED, M7I, ABSURD_CADENCE, ABSURD_GEAR]:
        handle(device(BIKE_7), advert(data))

    assert sensor.read(clock.now) == Reading(85.3, 50.0, clock.now)
    assert (sensor.stats.frames, sensor.stats.malformed) == (1, len(TRUNCATED) + 3)


def test_other_devices_and_other_bikes_garbage_are_not_counted() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=7)
    handle = sensor.advertisement_handler()

    handle(device("AA:AA:AA:AA:AA:AA"), advert(None))  # a phone
    handle(device("AA:AA:AA:AA:AA:AA"), advert(M3I_630, company=0x004C))  # Apple's data
    handle(device(BIKE_9), advert(b"\x06\x30"))  # a bike not (yet) known to be ours
    handle(device(BIKE_9), advert(frame_of_bike(9, cadence=80.0, gear=3)))

    assert sensor.stats.summary() == {
        "sensor_frames": 0,
        "sensor_malformed": 0,
        "sensor_reconnects": 0,
        "sensor_ignored": 0,
        "sensor_dropouts": 0,
    }


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_whatever_the_chosen_bike_sends_is_counted_once_and_never_raises(
    payloads: list[bytes],
) -> None:
    sensor = keiser(Clock(), address=BIKE_7)
    handle = sensor.advertisement_handler()

    for data in payloads:
        handle(device(BIKE_7), advert(data))

    stats = sensor.stats
    assert stats.frames + stats.malformed + stats.ignored == len(payloads)
    assert 0.0 <= sensor.read(100.0).cadence < 256


def test_older_console_keeps_resistance_at_its_last_value() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=7)
    handle = sensor.advertisement_handler()

    handle(device(BIKE_7), advert(M3I_606))

    assert sensor.read(clock.now) == Reading(80.0, 0.0, clock.now)


def test_bike_that_stops_advertising_reads_zero_after_seven_seconds_and_is_counted() -> None:
    clock = Clock()
    sensor = keiser(clock, keiser_id=7)
    sensor.advertisement_handler()(device(BIKE_7), advert(M3I_630))
    heard_at = clock.now

    assert sensor.read(heard_at + 6.5).cadence == 85.3
    assert sensor.read(heard_at + 7.5) == Reading(0.0, 50.0, heard_at)
    assert sensor.read(heard_at + 9.0).cadence == 0.0
    assert sensor.stats.dropouts == 1


def test_calibration_is_applied_once_to_the_bikes_reading() -> None:
    options = SensorOptions(
        kind="keiser", keiser_id=7, cadence_scale=1.1, resistance_scale=0.8, resistance_offset=5
    )
    sensor = open_sensor(options)
    inner = sensor.sensor  # type: ignore[attr-defined]
    assert isinstance(inner, KeiserSensor)

    inner.advertisement_handler()(device(BIKE_7), advert(M3I_630))
    reading = sensor.read(time.monotonic())

    assert reading.cadence == pytest.approx(85.3 * 1.1)
    assert reading.resistance == pytest.approx(50.0 * 0.8 + 5)


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists() or "DBUS_SYSTEM_BUS_ADDRESS" in os.environ,
    reason="this machine may have a Bluetooth service, where the scan would start",
)
def test_no_bluetooth_here_fails_start_with_advice_and_leaves_no_thread() -> None:
    sensor = open_sensor(SensorOptions(kind="keiser", keiser_id=7))

    with pytest.raises(SensorError, match="(?i)bluetooth|bike"):
        sensor.start()
    sensor.close()
    assert not [t for t in threading.enumerate() if t.name == KeiserSensor.thread_name]


# --- The scan, with bleak's scanner replaced by one the test drives -----------------------------


class ScriptedScanner:
    """Stands in for ``BleakScanner``: each start follows the script (``up`` or ``fail``) and
    the test delivers advertisements through the callback the sensor gave it."""

    script: list[str] = []
    made: list[ScriptedScanner] = []

    def __init__(self, detection_callback: object, **kwargs: object) -> None:
        self.callback = detection_callback
        self.kwargs = kwargs
        self.started = self.stopped = False
        ScriptedScanner.made.append(self)

    async def start(self) -> None:
        if ScriptedScanner.script.pop(0) == "fail":
            raise BleakError("org.bluez.Error.InProgress")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def scanner(monkeypatch: pytest.MonkeyPatch) -> type[ScriptedScanner]:
    monkeypatch.setattr(keiser_module, "BleakScanner", ScriptedScanner)
    ScriptedScanner.script = []
    ScriptedScanner.made = []
    return ScriptedScanner


def sensor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == KeiserSensor.thread_name]


def test_the_scan_hears_the_bike_and_stops_with_the_sensor(
    scanner: type[ScriptedScanner],
) -> None:
    scanner.script = ["up"]
    sensor = KeiserSensor(SensorOptions(kind="keiser", keiser_id=7))

    with sensor:
        (scan,) = scanner.made
        assert scan.started
        assert scan.kwargs == {"bluez": {"filters": {"DuplicateData": True}}}
        scan.callback(device(BIKE_7), advert(M3I_630))  # type: ignore[operator]
        assert sensor.read(time.monotonic()).cadence == 85.3

    assert scan.stopped
    assert not sensor_threads()


def test_a_bike_gone_for_the_rescan_time_restarts_the_scan_without_a_reconnect(
    scanner: type[ScriptedScanner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keiser_module, "RESCAN_AFTER", 0.05)
    scanner.script = ["up", "up", "up"]
    options = SensorOptions(kind="keiser", keiser_id=7, reconnect_min_delay=0.01)

    with KeiserSensor(options) as sensor:
        wait_until(lambda: len(scanner.made) == 3)
        assert all(scan.stopped for scan in scanner.made[:2])
        assert sensor.stats.reconnects == 0
    assert not sensor_threads()


def test_a_scan_that_fails_after_starting_is_retried_and_counted(
    scanner: type[ScriptedScanner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keiser_module, "RESCAN_AFTER", 0.05)
    scanner.script = ["up", "fail", "fail", "up"]
    options = SensorOptions(kind="keiser", keiser_id=7, reconnect_min_delay=0.01)

    with KeiserSensor(options) as sensor:
        wait_until(lambda: sensor.stats.reconnects == 1)
        assert [scan.started for scan in scanner.made] == [True, False, False, True]


def test_a_scan_that_cannot_start_fails_start(scanner: type[ScriptedScanner]) -> None:
    scanner.script = ["fail"]
    sensor = KeiserSensor(SensorOptions(kind="keiser", keiser_id=7))

    with pytest.raises(SensorError, match="Keiser with equipment id 7"):
        sensor.start()
    sensor.close()
    assert not sensor_threads()
