"""``--sensor keiser``: a Keiser M-series bike (M3i, M3i-TBT, M3iX, M5i), heard, never connected.

The bike broadcasts its ride in BLE advertisements to anyone listening, with no connection and
no pairing, so one computer can hear a whole room, and several agents on it, one per bike, can
listen at once: each runs its own scan (BlueZ shares the adapter between them) and keeps the
advertisements of its own bike (:class:`~alleycat_rider.sensors.keiser_frames.BikeChooser`:
``--keiser-id``, the equipment id set on the console, or ``--address``).

Real-time frames set the cadence and the resistance (the gear on the 0-100 scale); review-mode
frames, the averages a console shows after a ride, are counted as ignored. A bike that stops
advertising reads as silent, as any sensor does, after 7 s (Keiser's own timeout for consoles
that advertise every 2 s). The scan is started again when the bike has not been heard for
:data:`RESCAN_AFTER` seconds, so a scan the Bluetooth stack dropped does not go unnoticed.

Starting fails only when the scan cannot start (no adapter, no ``bluetoothd``): a console is
asleep until pedalled, and a studio's agents wait for their bikes rather than give up.

The seam with bleak is :meth:`KeiserSensor.advertisement_handler`: the function bleak's scanner
calls with ``(device, advertisement data)`` for each advertisement. Everything behind it is pure.

Imported only when ``--sensor keiser`` is chosen, because it imports bleak.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from alleycat_rider.sensors.base import Clock, SensorOptions
from alleycat_rider.sensors.ble import BleakSensor
from alleycat_rider.sensors.frames import FrameError
from alleycat_rider.sensors.keiser_frames import KEISER_COMPANY_ID, BikeChooser, parse_keiser_frame

#: Seconds without the bike after which the scan is started again (Keiser's "bike gone").
RESCAN_AFTER = 60.0

AdvertisementHandler = Callable[[BLEDevice, AdvertisementData], None]
"""What bleak's scanner calls with each advertisement it receives."""


class KeiserSensor(BleakSensor):
    """A Keiser bike heard by a BLE scan on a background thread running bleak's asyncio loop."""

    thread_name = "alleycat-keiser-sensor"

    def __init__(self, options: SensorOptions, *, clock: Clock = time.monotonic) -> None:
        """Args:
        options: ``keiser_id`` and/or ``address``, the reconnect bounds.
        clock: stamps readings; ``time.monotonic`` unless a test needs its own.
        """
        super().__init__(options, clock=clock)
        self._chooser = BikeChooser(
            equipment_id=options.keiser_id,
            address=options.address,
            lost_after=options.effective_silence_timeout,
        )
        self._heard_at = clock()
        self._scan_failed = False

    @property
    def target(self) -> str:
        """How the bike is named in messages."""
        parts = []
        if self._options.keiser_id is not None:
            parts.append(f"with equipment id {self._options.keiser_id}")
        if self._options.address:
            parts.append(f"at {self._options.address}")
        return "Keiser " + (" ".join(parts) if parts else "(the first heard)")

    def advertisement_handler(self) -> AdvertisementHandler:
        """The function to give bleak's scanner as its detection callback.

        Advertisements of other devices and other Keiser bikes are passed over; the chosen
        bike's real-time frames update the reading, its review-mode frames are counted as
        ignored, and its unreadable or impossible frames as malformed. Nothing raises here.
        """

        def handle(device: BLEDevice, advertisement: AdvertisementData) -> None:
            data = advertisement.manufacturer_data.get(KEISER_COMPANY_ID)
            if data is None or self._chooser.passes_over(device.address, data):
                return
            now = self._clock()
            try:
                frame = parse_keiser_frame(data)
            except FrameError:
                if self._chooser.is_chosen_address(device.address):
                    self.stats.malformed += 1
                return
            if not self._chooser.claims(device.address, frame.equipment_id, now):
                return
            self._heard_at = now
            if not frame.real_time:
                self.stats.ignored += 1
                return
            try:
                cadence, resistance = frame.checked_cadence(), frame.resistance()
            except FrameError:
                self.stats.malformed += 1
                return
            self.stats.frames += 1
            self._latest.update(now, cadence=cadence, resistance=resistance)

        return handle

    async def _session(self) -> None:
        """One scan: start it, then keep it until the bike has been gone for a minute."""
        try:
            await self._scan()
        except Exception:
            self._scan_failed = True
            raise

    async def _scan(self) -> None:
        # BlueZ otherwise reports a device's advertisements only when they change, or, on some
        # systems, hardly at all (bluez/bluez#1113).
        scanner = BleakScanner(
            self.advertisement_handler(), bluez={"filters": {"DuplicateData": True}}
        )
        await scanner.start()
        try:
            if self._scan_failed:
                self.stats.reconnects += 1
                self._scan_failed = False
            self._connected_once = True
            self._heard_at = self._clock()
            self._ready.set()
            while (wait := self._heard_at + RESCAN_AFTER - self._clock()) > 0:
                await asyncio.sleep(wait)
        finally:
            with suppress(BleakError, OSError, TimeoutError):
                await scanner.stop()
