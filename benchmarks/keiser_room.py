"""What a room of Keiser bikes costs one agent: the advertisement handler's CPU time.

Every agent of a studio hears every bike's advertisements (about 3 a second each from console
6.30) and keeps its own bike's. This feeds one ``--sensor keiser`` agent's handler, the function
bleak's scanner calls, with a room's advertisements in turn (its own bike's among them, as
bleak's objects) and prints the CPU time per advertisement and what a room costs each agent and
all of them. BlueZ and D-Bus delivering the advertisements cost more, and are not here: there
is no radio on the machines this runs on.

    .venv/bin/python -m benchmarks.keiser_room --bikes 20 --rate 3.14
"""

from __future__ import annotations

import argparse
import time

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from alleycat_rider.sensors.base import SensorOptions
from alleycat_rider.sensors.keiser import KeiserSensor
from alleycat_rider.sensors.keiser_frames import EQUIPMENT_ID_OFFSET, KEISER_COMPANY_ID

#: A console 6.30 real-time frame (85.3 rpm, gear 12) as bleak hands it over; byte 3 is the id.
FRAME = bytes.fromhex("06 30 00 07 55 03 28 05 BB 00 2A 00 0C 22 34 80 0C")


def room(bikes: int) -> list[tuple[BLEDevice, AdvertisementData]]:
    """One advertisement from each bike of a room, bike ``i`` set to equipment id ``i``."""
    adverts = []
    for bike in range(1, bikes + 1):
        frame = FRAME[:EQUIPMENT_ID_OFFSET] + bytes([bike]) + FRAME[EQUIPMENT_ID_OFFSET + 1 :]
        data = AdvertisementData("M3", {KEISER_COMPANY_ID: frame}, {}, [], None, -60, ())
        adverts.append((BLEDevice(f"F0:00:00:00:00:{bike:02X}", "M3", None), data))
    return adverts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bikes", type=int, default=20, help="bikes in the room")
    parser.add_argument("--rate", type=float, default=3.14, help="advertisements a second a bike")
    parser.add_argument("--rounds", type=int, default=20_000, help="times the room is heard")
    args = parser.parse_args()

    sensor = KeiserSensor(SensorOptions(kind="keiser", keiser_id=1))
    handle = sensor.advertisement_handler()
    adverts = room(args.bikes)
    started = time.process_time()
    for _ in range(args.rounds):
        for device, advertisement in adverts:
            handle(device, advertisement)
    spent = time.process_time() - started

    heard = args.rounds * args.bikes
    per_advert = spent / heard
    per_agent = per_advert * args.bikes * args.rate
    print(f"advertisements handled   {heard:,} ({sensor.stats.frames:,} of them its own bike's)")
    print(f"CPU per advertisement    {per_advert * 1e6:.2f} us")
    print(f"a room of {args.bikes} at {args.rate}/s  {per_agent * 100:.3f}% of a core per agent, "
          f"{per_agent * args.bikes * 100:.2f}% for all {args.bikes} agents")  # fmt: skip


if __name__ == "__main__":
    main()
