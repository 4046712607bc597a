"""``--sensor ble``: a Bluetooth LE bike, through bleak on an asyncio loop of its own thread.

The bike is found by ``--address``, else by advertised name, else as the first device
advertising FTMS or CSC. Once connected, the sensor subscribes to FTMS Indoor Bike Data
(cadence and resistance) when the bike offers it, else to CSC Measurement (cadence from crank
revolutions). When the bike drops the link, the sensor reconnects with a bounded backoff; in
between it reads as silent, so cadence drops to zero.

The seam with bleak is :meth:`BleSensor.notification_handler`: the function bleak calls with
``(characteristic, bytearray)`` for each notification. Everything behind it is pure.

:class:`BleakSensor`, the thread, its loop and the backoff, is shared with the Keiser and Echelon
sensors.

Imported only when ``--sensor ble`` is chosen, because it imports bleak.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager, suppress
from enum import Enum
from typing import Any, Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.backends.service import BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError

from alleycat_rider.errors import SensorError
from alleycat_rider.sensors.base import (
    Clock,
    LatestReading,
    Reading,
    Sensor,
    SensorOptions,
    SensorStats,
    next_delay,
)
from alleycat_rider.sensors.frames import (
    CrankCadence,
    FrameError,
    check_cadence,
    parse_csc_measurement,
    parse_indoor_bike_data,
)

NotificationHandler = Callable[[object, bytearray], None]
"""What bleak's ``start_notify`` calls for each notification: the characteristic (a
``BleakGATTCharacteristic``, unused: each subscription gets its own handler) and the bytes."""


class GattClient(Protocol):
    """What a sensor does with a connected ``BleakClient``: look, subscribe, write."""

    @property
    def services(self) -> BleakGATTServiceCollection:
        """The bike's services and their characteristics."""
        ...

    async def start_notify(self, char_specifier: str, callback: NotificationHandler) -> None:
        """Write the characteristic's CCCD and call ``callback`` with each notification."""
        ...

    async def write_gatt_char(
        self, char_specifier: str, data: bytes | bytearray, response: bool | None = None
    ) -> None:
        """Write ``data`` to the characteristic."""
        ...


def uuid16(short: int) -> str:
    """The full 128-bit UUID string of a 16-bit Bluetooth SIG UUID, as bleak writes them."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


FTMS_SERVICE = uuid16(0x1826)
INDOOR_BIKE_DATA = uuid16(0x2AD2)
CSC_SERVICE = uuid16(0x1816)
CSC_MEASUREMENT = uuid16(0x2A5B)


def _normalize(uuid: str) -> str:
    uuid = uuid.lower()
    return uuid16(int(uuid, 16)) if len(uuid) == 4 else uuid


class BleProfile(Enum):
    """Which of a bike's BLE characteristics the sensor listens to."""

    FTMS = INDOOR_BIKE_DATA
    """FTMS Indoor Bike Data: cadence and resistance."""
    CSC = CSC_MEASUREMENT
    """CSC Measurement: cadence only, from cumulative crank revolutions."""

    @property
    def characteristic_uuid(self) -> str:
        """The characteristic to subscribe to."""
        return self.value


def choose_profile(characteristic_uuids: Iterable[str]) -> BleProfile | None:
    """FTMS if the device offers Indoor Bike Data (it has resistance), else CSC, else None."""
    offered = {_normalize(uuid) for uuid in characteristic_uuids}
    for profile in (BleProfile.FTMS, BleProfile.CSC):
        if profile.characteristic_uuid in offered:
            return profile
    return None


def advertises_bike(service_uuids: Iterable[str]) -> bool:
    """Whether an advertisement names a service this sensor can read."""
    return bool({_normalize(uuid) for uuid in service_uuids} & {FTMS_SERVICE, CSC_SERVICE})


class NotificationDecoder(Protocol):
    """Turns one notification into (cadence, resistance); None where it says nothing."""

    def __call__(self, data: bytes, now: float) -> tuple[float | None, float | None]:
        """Decode ``data`` received at ``now``; raise FrameError if it is malformed."""
        ...


class FtmsDecoder:
    """Cadence and resistance from each Indoor Bike Data notification.

    Each part of a split record is used as it comes: cadence and resistance ride in whichever
    part carries them, and waiting for the last part would only delay them.
    """

    def __init__(self, resistance_scale: float = 1.0) -> None:
        """Args:
        resistance_scale: multiplies the reported level (0.1 for bikes reporting it ×10).
        """
        self._resistance_scale = resistance_scale

    def __call__(self, data: bytes, now: float) -> tuple[float | None, float | None]:
        """Decode one notification."""
        record = parse_indoor_bike_data(data)
        cadence = None if record.cadence_rpm is None else check_cadence(record.cadence_rpm)
        resistance = None
        if record.resistance is not None:
            resistance = record.resistance * self._resistance_scale
        return cadence, resistance


class CscDecoder:
    """Cadence from CSC crank revolutions; wheel-only notifications say nothing."""

    def __init__(self) -> None:
        self._crank = CrankCadence()

    def __call__(self, data: bytes, now: float) -> tuple[float | None, float | None]:
        """Decode one notification."""
        measurement = parse_csc_measurement(data)
        if measurement.crank_revolutions is None or measurement.crank_event_time is None:
            return None, None
        cadence = self._crank.update(
            measurement.crank_revolutions, measurement.crank_event_time, now
        )
        return cadence, None


def ble_error_message(exc: BaseException, target: str) -> str:
    """One line telling the rider why the BLE bike could not be reached and what to do."""
    if isinstance(exc, BleakDeviceNotFoundError):
        return (
            f"BLE bike {target} not found: wake it by pedalling, check it is in range and "
            "not connected to another app"
        )
    if isinstance(exc, BleakError):
        return (
            f"Bluetooth failed with bike {target}: {str(exc).rstrip('.')}; check the adapter "
            "is present and powered (`bluetoothctl show`, `bluetoothctl power on`)"
        )
    if isinstance(exc, TimeoutError):
        return f"BLE bike {target} did not answer in time: wake it by pedalling and retry"
    if isinstance(exc, OSError):
        # Raised by the D-Bus connection when BlueZ, or D-Bus itself, is not there.
        return (
            f"cannot reach the Bluetooth service ({exc}): is there a Bluetooth adapter and "
            "is bluetoothd running? (`systemctl status bluetooth`)"
        )
    return f"Bluetooth failed with bike {target}: {exc!r}"


class BleakSensor(Sensor):
    """A bike read by bleak on an asyncio loop of its own thread.

    :meth:`start` returns once the first :meth:`_session` is up, or raises what kept it from
    coming up; after that, a session that ends or fails is started again with a bounded
    backoff, and :meth:`close` stops whatever is running. Subclasses say what a session is:
    a connection (:class:`BleSensor`) or a scan (``KeiserSensor``).
    """

    def __init__(self, options: SensorOptions, *, clock: Clock = time.monotonic) -> None:
        """Args:
        options: ``address`` or ``ble_name``, ``scan_timeout``, the reconnect bounds.
        clock: stamps readings; ``time.monotonic`` unless a test needs its own.
        """
        self.stats = SensorStats()
        self._options = options
        self._clock = clock
        self._latest = LatestReading(options.effective_silence_timeout, clock(), self.stats)
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._failure: SensorError | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._connected_once = False

    #: The name of the thread running bleak's loop.
    thread_name = "alleycat-ble-sensor"

    @property
    @abstractmethod
    def target(self) -> str:
        """How the bike is named in messages."""

    @abstractmethod
    async def _session(self) -> None:
        """Reach the bike, then set ``_connected_once`` and ``_ready`` once readings can come;
        return or raise when they stop."""

    def start(self) -> None:
        """Find the bike, connect, subscribe; return once notifications are on.

        Raises:
            SensorError: no adapter, the bike was not found, or it offers neither FTMS nor CSC.
        """
        if self._thread is not None:
            return
        self._latest = LatestReading(
            self._options.effective_silence_timeout, self._clock(), self.stats
        )
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name=self.thread_name, daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise self._failure

    def read(self, now: float) -> Reading:
        """The latest reading; cadence 0 if the bike has said nothing for the timeout."""
        return self._latest.read(now)

    def close(self) -> None:
        """Disconnect and stop the thread; safe to call twice."""
        self._closing.set()
        with self._lock:
            if self._loop is not None and self._stop is not None:
                with suppress(RuntimeError):  # the loop has already finished
                    self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def _main(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
        delay = self._options.reconnect_min_delay
        try:
            while not self._closing.is_set():
                try:
                    await self._until_stopped(self._session(), stop)
                    delay = self._options.reconnect_min_delay
                # Whatever the Bluetooth stack raises: fail start, or retry once connected.
                except Exception as exc:
                    if not self._connected_once:
                        self._failure = (
                            exc
                            if isinstance(exc, SensorError)
                            else SensorError(ble_error_message(exc, self.target))
                        )
                        return
                    delay = next_delay(delay, self._options)
                await self._until_stopped(asyncio.sleep(delay), stop)
        finally:
            with self._lock:
                self._loop = self._stop = None
            self._ready.set()

    @staticmethod
    async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
        """Run ``work`` until it ends or ``stop`` is set, whichever comes first."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        with suppress(asyncio.CancelledError):
            await stopper
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            return
        task.result()


class BleSensor(BleakSensor):
    """A BLE bike read on a background thread running bleak's asyncio loop."""

    @property
    def target(self) -> str:
        """How the bike is named in messages."""
        if self._options.address:
            return self._options.address
        if self._options.ble_name:
            return f"named {self._options.ble_name!r}"
        return "advertising FTMS or CSC"

    def notification_handler(self, profile: BleProfile) -> NotificationHandler:
        """The function to give bleak's ``start_notify`` for ``profile``'s characteristic.

        Malformed notifications are counted and skipped; nothing a bike sends raises here.
        """
        decode: NotificationDecoder = (
            FtmsDecoder(self._options.ftms_resistance_scale)
            if profile is BleProfile.FTMS
            else CscDecoder()
        )

        def handle(_characteristic: object, data: bytearray) -> None:
            now = self._clock()
            try:
                cadence, resistance = decode(bytes(data), now)
            except FrameError:
                self.stats.malformed += 1
                return
            self.stats.frames += 1
            self._latest.update(now, cadence=cadence, resistance=resistance)

        return handle

    async def _session(self) -> None:
        """One connection: subscribe, count it, then wait for the bike to drop it."""
        async with self._subscribed() as dropped:
            if self._connected_once:
                self.stats.reconnects += 1
            self._connected_once = True
            self._ready.set()
            await dropped.wait()

    @asynccontextmanager
    async def _subscribed(self) -> AsyncIterator[asyncio.Event]:
        """Find and connect to the bike, turn notifications on; yield the event of a drop."""
        device = await self._locate()
        dropped = asyncio.Event()
        client = BleakClient(device, disconnected_callback=lambda _client: dropped.set())
        await client.connect()
        try:
            await self.subscribe(client)
            yield dropped
        finally:
            with suppress(BleakError, OSError, TimeoutError):
                await client.disconnect()

    async def subscribe(self, client: GattClient) -> None:
        """Turn on the notifications to read, on a connected bike.

        Raises:
            SensorError: the device offers neither FTMS Indoor Bike Data nor CSC Measurement.
        """
        offered = [c.uuid for service in client.services for c in service.characteristics]
        profile = choose_profile(offered)
        if profile is None:
            raise SensorError(
                f"BLE device {self.target} offers neither FTMS Indoor Bike Data nor CSC "
                "Measurement: is it a bike? Pass the bike's --address"
            )
        await client.start_notify(profile.characteristic_uuid, self.notification_handler(profile))

    def is_bike(self, advertisement: AdvertisementData) -> bool:
        """Whether a device advertising this, found by a scan, is a bike this sensor reads."""
        return advertises_bike(advertisement.service_uuids)

    async def _locate(self) -> BLEDevice:
        timeout = self._options.scan_timeout
        device: BLEDevice | None
        if self._options.address:
            device = await BleakScanner.find_device_by_address(self._options.address, timeout)
        elif self._options.ble_name:
            device = await BleakScanner.find_device_by_name(self._options.ble_name, timeout)
        else:

            def is_bike(_device: BLEDevice, advertisement: AdvertisementData) -> bool:
                return self.is_bike(advertisement)

            device = await BleakScanner.find_device_by_filter(is_bike, timeout)
        if device is None:
            raise SensorError(
                f"no BLE bike {self.target} seen in a {timeout:g} s scan: wake it by pedalling, "
                "check it is in range, or find it with `bluetoothctl scan le`"
            )
        return device
