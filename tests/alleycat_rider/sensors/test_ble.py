"""The BLE sensor, fed real packets through the handler bleak would call, and its link logic.

No radio here: bleak itself is not faked. The tests drive the notification seam (what bleak
calls with each notification) and, for reconnection, replace the one method that opens the
link with a scripted one; the loop, backoff, counting and threading above it are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from bleak.exc import BleakDeviceNotFoundError, BleakError

from alleycat_rider.errors import SensorError
from alleycat_rider.sensors import Reading, SensorOptions, open_sensor
from alleycat_rider.sensors.ble import (
    CSC_MEASUREMENT,
    CSC_SERVICE,
    FTMS_SERVICE,
    INDOOR_BIKE_DATA,
    BleProfile,
    BleSensor,
    advertises_bike,
    ble_error_message,
    choose_profile,
)
from alleycat_rider.sensors.frames import (
    CscMeasurement,
    IndoorBikeData,
    encode_csc_measurement,
    encode_indoor_bike_data,
)
from tests.alleycat_rider.sensors.helpers import Clock, wait_until

ZWIFT_HUB = bytes.fromhex("FE 02 71 07 17 07 7A 00 7A 00 05 00 00 14 00 61 00 61 00 00")
JETBLACK = bytes.fromhex("64 02 00 00 00 00 14 00 00 00 00")
GARBAGE = [b"", b"\x02", ZWIFT_HUB[:7], b"\xff\xff\x00", bytes(range(5))]
OPTIONS = SensorOptions(kind="ble", address="AA:BB:CC:DD:EE:FF")


def csc(revolutions: int, event_time: int) -> bytearray:
    measurement = CscMeasurement(crank_revolutions=revolutions, crank_event_time=event_time)
    return bytearray(encode_csc_measurement(measurement))


# --- FTMS through the notification seam -------------------------------------------------------


def test_zwift_hub_notification_reads_61_rpm_at_resistance_20() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.FTMS)

    handle(None, bytearray(ZWIFT_HUB))

    assert sensor.read(clock.now) == Reading(61.0, 20.0, clock.now)
    assert sensor.stats.frames == 1


def test_jetblack_notification_reads_a_bike_at_rest() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.FTMS)

    handle(None, bytearray(ZWIFT_HUB))
    clock.now += 1
    handle(None, bytearray(JETBLACK))

    assert sensor.read(clock.now) == Reading(0.0, 20.0, clock.now)


def test_resistance_reported_times_ten_can_be_scaled_back() -> None:
    clock = Clock()
    options = SensorOptions(kind="ble", address="AA:BB", ftms_resistance_scale=0.1)
    sensor = BleSensor(options, clock=clock)
    frame = encode_indoor_bike_data(IndoorBikeData(cadence_rpm=80.0, resistance=200.0))

    sensor.notification_handler(BleProfile.FTMS)(None, bytearray(frame))

    assert sensor.read(clock.now).resistance == pytest.approx(20.0)


def test_garbage_notifications_are_counted_and_leave_the_reading_alone() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.FTMS)
    handle(None, bytearray(ZWIFT_HUB))

    for frame in GARBAGE:
        handle(None, bytearray(frame))

    assert sensor.read(clock.now) == Reading(61.0, 20.0, clock.now)
    assert (sensor.stats.frames, sensor.stats.malformed) == (1, len(GARBAGE))


def test_cadence_from_one_part_of_a_split_record_is_kept_by_the_next() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.FTMS)
    first = IndoorBikeData(more_data=True, cadence_rpm=90.0, resistance=40.0)
    last = IndoorBikeData(speed_kmh=25.0, power_w=180)

    handle(None, bytearray(encode_indoor_bike_data(first)))
    handle(None, bytearray(encode_indoor_bike_data(last)))

    assert sensor.read(clock.now) == Reading(90.0, 40.0, clock.now)


def test_bike_that_stops_notifying_reads_zero_cadence() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    sensor.notification_handler(BleProfile.FTMS)(None, bytearray(ZWIFT_HUB))

    assert sensor.read(clock.now + 3.5) == Reading(0.0, 20.0, clock.now)
    assert sensor.stats.dropouts == 1


# --- CSC through the notification seam --------------------------------------------------------


def test_csc_crank_revolutions_read_as_cadence() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.CSC)

    handle(None, csc(65534, 64512))
    clock.now += 1
    handle(None, csc(0, 0))  # 2 revolutions in 1024 ticks, both counters wrapping

    assert sensor.read(clock.now).cadence == 120.0


def test_csc_rider_who_stops_pedalling_reads_zero_after_two_seconds() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.CSC)
    handle(None, csc(10, 1024))
    clock.now += 1
    handle(None, csc(11, 2048))

    for _ in range(2):  # the sensor keeps notifying the same last crank event
        clock.now += 1
        handle(None, csc(11, 2048))

    assert sensor.read(clock.now).cadence == 0.0


def test_csc_garbage_and_absurd_cadence_are_counted_not_raised() -> None:
    clock = Clock()
    sensor = BleSensor(OPTIONS, clock=clock)
    handle = sensor.notification_handler(BleProfile.CSC)
    handle(None, csc(0, 0))
    clock.now += 1
    handle(None, csc(1, 1024))

    clock.now += 1
    handle(None, csc(500, 2048))  # 499 revolutions in a second
    short_for_their_flags = [b"", b"\x02", b"\x03\x00", b"\x01\x00\x00\x00", b"\x02\x01\x00"]
    for frame in short_for_their_flags:
        handle(None, bytearray(frame))

    assert sensor.read(clock.now).cadence == 60.0
    assert sensor.stats.malformed == 1 + len(short_for_their_flags)


# --- Choosing what to listen to ---------------------------------------------------------------


def test_ftms_is_preferred_when_the_bike_offers_both() -> None:
    assert choose_profile([CSC_MEASUREMENT, INDOOR_BIKE_DATA]) is BleProfile.FTMS


def test_csc_is_used_when_the_bike_offers_only_crank_data() -> None:
    assert choose_profile(["00002A5B-0000-1000-8000-00805F9B34FB", "2a37"]) is BleProfile.CSC


def test_device_without_bike_data_is_not_a_bike() -> None:
    assert choose_profile(["2a37", "2a19"]) is None


def test_scan_recognises_bikes_by_their_advertised_services() -> None:
    assert advertises_bike([FTMS_SERVICE])
    assert advertises_bike(["1816"])
    assert advertises_bike([CSC_SERVICE.upper()])
    assert not advertises_bike(["180d"])


# --- Errors the rider sees --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "advice"),
    [
        (BleakDeviceNotFoundError("AA:BB"), "wake it by pedalling"),
        (BleakError("No Bluetooth adapters found."), "bluetoothctl show"),
        (TimeoutError(), "did not answer in time"),
        (FileNotFoundError(2, "No such file or directory"), "is bluetoothd running"),
        (RuntimeError("boom"), "boom"),
    ],
)
def test_bluetooth_failures_become_advice(exc: BaseException, advice: str) -> None:
    assert advice in ble_error_message(exc, "AA:BB")


def test_ble_sensor_that_reaches_no_bike_fails_to_start_with_advice() -> None:
    options = SensorOptions(kind="ble", ble_name="no such bike", scan_timeout=0.2)
    sensor = open_sensor(options)

    with pytest.raises(SensorError, match="(?i)bluetooth|bike"):
        sensor.start()
    sensor.close()


# --- Reconnecting -----------------------------------------------------------------------------


class ScriptedLinkSensor(BleSensor):
    """A BLE sensor whose radio link follows a script: ``up`` connects, ``missing`` fails,
    ``hang`` never finishes."""

    def __init__(self, options: SensorOptions, script: list[str], clock: Clock) -> None:
        super().__init__(options, clock=clock)
        self.script = script
        self.handler: Callable[[object, bytearray], None] | None = None
        self._drop: Callable[[], object] | None = None

    def drop_link(self) -> None:
        """What the bike does when it goes out of range."""
        assert self._drop is not None
        self._drop()

    @asynccontextmanager
    async def _subscribed(self) -> AsyncIterator[asyncio.Event]:
        step = self.script.pop(0)
        if step == "missing":
            raise BleakDeviceNotFoundError("AA:BB:CC:DD:EE:FF")
        if step == "hang":  # a scan or connect that takes its time
            await asyncio.Event().wait()
        dropped = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._drop = lambda: loop.call_soon_threadsafe(dropped.set)
        self.handler = self.notification_handler(BleProfile.FTMS)
        yield dropped


def sensor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "alleycat-ble-sensor"]


def test_dropped_link_is_reconnected_and_counted() -> None:
    clock = Clock()
    options = SensorOptions(kind="ble", address="AA:BB:CC:DD:EE:FF", reconnect_min_delay=0.01)
    sensor = ScriptedLinkSensor(options, ["up", "missing", "missing", "up"], clock)
    with sensor:
        assert sensor.handler is not None
        sensor.handler(None, bytearray(ZWIFT_HUB))
        first_link = sensor.handler

        sensor.drop_link()
        wait_until(lambda: sensor.stats.reconnects == 1)
        assert sensor.handler is not first_link
        sensor.handler(None, bytearray(JETBLACK))

        assert sensor.read(clock.now) == Reading(0.0, 20.0, clock.now)
        assert sensor.script == []
    assert not sensor_threads()


def test_bike_missing_at_start_fails_start_and_leaves_no_thread() -> None:
    sensor = ScriptedLinkSensor(OPTIONS, ["missing"], Clock())

    with pytest.raises(SensorError, match="wake it by pedalling"):
        sensor.start()
    sensor.close()
    assert not sensor_threads()


def test_closing_while_reconnecting_stops_at_once() -> None:
    options = SensorOptions(kind="ble", address="AA:BB:CC:DD:EE:FF", reconnect_min_delay=0.01)
    sensor = ScriptedLinkSensor(options, ["up", "hang"], Clock())
    sensor.start()
    sensor.drop_link()
    wait_until(lambda: sensor.script == [])

    closer = threading.Thread(target=sensor.close)
    closer.start()
    closer.join(timeout=10)

    assert not closer.is_alive()
    assert not sensor_threads()
