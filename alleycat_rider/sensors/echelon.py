"""``--sensor echelon``: an Echelon bike (Connect Sport, EX-3, EX-5...), over its own GATT service.

The bike is found like any BLE bike (``--address``, else ``--ble-name``, else the first device
named ``ECH...`` or advertising Echelon's service), connected to, and asked for its data: the
sensor subscribes to notifications on ``...f4`` (bleak writes its CCCD, ``01 00``) and then writes
``F0 B0 01 01 A2`` to ``...f2``, as the bike's own app does. The bike then sends cadence packets
and, when the knob moves, resistance packets (:mod:`~alleycat_rider.sensors.echelon_frames`).
Reconnection, silence and counting are :class:`~alleycat_rider.sensors.ble.BleSensor`'s.

Imported only when ``--sensor echelon`` is chosen, because it imports bleak.
"""

from __future__ import annotations

from bleak.backends.scanner import AdvertisementData

from alleycat_rider.errors import SensorError
from alleycat_rider.sensors.ble import BleSensor, GattClient, NotificationHandler
from alleycat_rider.sensors.echelon_frames import (
    ENABLE_NOTIFICATIONS,
    EchelonCadence,
    EchelonResistance,
    parse_echelon_packet,
)
from alleycat_rider.sensors.frames import FrameError


def echelon_uuid(short: int) -> str:
    """One of Echelon's 128-bit UUIDs, which differ in their first 32 bits only."""
    return f"{short:08x}-45f2-11e7-9598-0800200c9a66"


#: The service the bike advertises.
ADVERTISED_SERVICE = echelon_uuid(0x0BF669F0)
#: The service holding the two characteristics below.
DATA_SERVICE = echelon_uuid(0x0BF669F1)
#: Written to: commands.
WRITE_CHARACTERISTIC = echelon_uuid(0x0BF669F2)
#: Notifies the bike's data.
DATA_CHARACTERISTIC = echelon_uuid(0x0BF669F4)
#: Every Echelon bike's advertised name starts so (``ECH-SPORT-1234``, ``ECHEX-5s``).
NAME_PREFIX = "ECH"


def is_echelon(advertisement: AdvertisementData) -> bool:
    """Whether an advertisement is an Echelon bike's: its name or its service."""
    name = advertisement.local_name or ""
    services = {uuid.lower() for uuid in advertisement.service_uuids}
    return name.upper().startswith(NAME_PREFIX) or ADVERTISED_SERVICE in services


class EchelonSensor(BleSensor):
    """An Echelon bike read on a background thread running bleak's asyncio loop."""

    thread_name = "alleycat-echelon-sensor"

    @property
    def target(self) -> str:
        """How the bike is named in messages."""
        if self._options.address or self._options.ble_name:
            return super().target
        return "named ECH... or advertising Echelon's service"

    def is_bike(self, advertisement: AdvertisementData) -> bool:
        """Whether a device found by a scan is an Echelon bike."""
        return is_echelon(advertisement)

    async def subscribe(self, client: GattClient) -> None:
        """Turn on the data notifications, then ask the bike to send.

        Raises:
            SensorError: the device does not offer Echelon's data characteristic.
        """
        offered = {c.uuid.lower() for service in client.services for c in service.characteristics}
        if not {DATA_CHARACTERISTIC, WRITE_CHARACTERISTIC} <= offered:
            raise SensorError(
                f"BLE device {self.target} does not offer Echelon's data service: is it an "
                "Echelon bike? Pass the bike's --address"
            )
        await client.start_notify(DATA_CHARACTERISTIC, self.echelon_handler())
        await client.write_gatt_char(WRITE_CHARACTERISTIC, ENABLE_NOTIFICATIONS, response=True)

    def echelon_handler(self) -> NotificationHandler:
        """The function to give bleak's ``start_notify`` for the data characteristic.

        Cadence packets set the cadence, resistance packets the resistance (kept until the
        next, as the bike sends one only when the knob moves); other well-formed packets are
        counted as ignored, malformed ones as malformed. Nothing a bike sends raises here.
        """

        def handle(_characteristic: object, data: bytearray) -> None:
            now = self._clock()
            try:
                packet = parse_echelon_packet(bytes(data))
            except FrameError:
                self.stats.malformed += 1
                return
            match packet:
                case EchelonCadence():
                    self._latest.update(now, cadence=packet.cadence_rpm)
                case EchelonResistance():
                    self._latest.update(now, resistance=packet.resistance)
                case _:
                    self.stats.ignored += 1
                    return
            self.stats.frames += 1

        return handle
