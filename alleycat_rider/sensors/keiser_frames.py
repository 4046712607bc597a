"""Keiser M-series broadcasts (M3i, M3i-TBT, M3iX, M5i): bytes in, values out, no I/O.

The bike never takes a connection: its console puts the ride in the manufacturer data of its
BLE advertisements (company id 0x0102), about three times a second from console 6.30 (every
2 s before). Bleak hands over that data without the company id, so the offsets here are the
layout's minus two:

====== ==================================================================================
offset field
====== ==================================================================================
0      version major (6 for every M-series console read here)
1      version minor, written as hex digits (0x30 is 6.30)
2      data type: 0 or 129-254 real time (129-254: interval ``value - 128``); 1-128 and 255
       review mode (the averages of a finished ride)
3      equipment id: the number set on the console
4-5    cadence, 0.1 rpm
6-7    heart rate, 0.1 bpm (0: none)
8-9    power, W
10-11  energy, kcal
12, 13 elapsed minutes, seconds
14-15  distance, 0.1 units: km when bit 15 is set, else miles
16     gear (from console x.21; 1 to 24)
====== ==================================================================================

Every 16-bit field is little-endian. Like Keiser's own parser, frames of 16 or 17 bytes are
read (18 or 19 with the company id; longer ones are debug output) and only version major 6:
the M7i (console 1.xx, a layout of its own) is refused.

:class:`BikeChooser` decides which advertisements are the chosen bike's, when a room of bikes
advertises at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from alleycat_rider.sensors.frames import FrameError, check_cadence

#: Keiser's Bluetooth SIG company id, the key of its manufacturer data.
KEISER_COMPANY_ID = 0x0102
#: Shortest frame read: through the distance.
MIN_FRAME_LENGTH = 16
#: Longest frame read: with the gear; longer frames are the console's debug output.
MAX_FRAME_LENGTH = 17
#: The version major of every console with this layout.
SUPPORTED_MAJOR = 6
#: Consoles from version x.21 (minor byte 0x21) broadcast the gear.
GEAR_SINCE_MINOR = 0x21
#: The M-series' highest gear; the message's resistance 100.
TOP_GEAR = 24
#: Where the equipment id is in a frame.
EQUIPMENT_ID_OFFSET = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class KeiserFrame:
    """One M-series broadcast, as the console sent it."""

    version: str
    """The console's firmware, as printed on it: ``6.30``."""
    data_type: int
    """0 or 129-254: real time; anything else: review mode."""
    equipment_id: int
    """The id set on the console, which tells the bikes of a room apart."""
    cadence_rpm: float
    heart_rate_bpm: float | None
    """None when no heart rate monitor is paired."""
    power_w: int
    energy_kcal: int
    elapsed_s: int
    distance: float
    distance_unit: str
    """``km`` or ``mi``."""
    gear: int | None
    """None on consoles older than x.21, or a frame that stops before it."""

    @property
    def real_time(self) -> bool:
        """Whether this is the ride as it happens (not review mode's averages)."""
        return self.data_type == 0 or 129 <= self.data_type <= 254

    def resistance(self) -> float | None:
        """The gear on the message's 0-100 scale (:func:`gear_to_resistance`), if sent.

        Raises:
            FrameError: a gear no M-series bike has.
        """
        return None if self.gear is None else gear_to_resistance(self.gear)

    def checked_cadence(self) -> float:
        """The cadence, if a rider could pedal it.

        Raises:
            FrameError: an impossible cadence (a glitch, counted and skipped).
        """
        return check_cadence(self.cadence_rpm)


def gear_to_resistance(gear: int) -> float:
    """Gear 1-24 as the message's resistance, 0-100: ``gear x 100 / 24``, so gear 24 is 100.

    Gear 0 reads as 0.

    Raises:
        FrameError: a gear above 24.
    """
    if not 0 <= gear <= TOP_GEAR:
        raise FrameError(f"gear {gear} is out of range 0..{TOP_GEAR}")
    return gear * 100 / TOP_GEAR


def parse_keiser_frame(data: bytes) -> KeiserFrame:
    """Parse an M-series broadcast's manufacturer data (without the company id).

    Raises:
        FrameError: the data is not an M-series broadcast: wrong length or version.
    """
    data = bytes(data)
    if not MIN_FRAME_LENGTH <= len(data) <= MAX_FRAME_LENGTH:
        raise FrameError(
            f"a Keiser frame has {MIN_FRAME_LENGTH} or {MAX_FRAME_LENGTH} bytes, not {len(data)}"
        )
    major, minor = data[0], data[1]
    if major != SUPPORTED_MAJOR:
        raise FrameError(f"Keiser console version {major:x}.{minor:02x} is not an M3i/M3iX/M5i")

    def u16(offset: int) -> int:
        return int.from_bytes(data[offset : offset + 2], "little")

    heart_rate = u16(6) / 10
    distance = u16(14)
    gear = data[16] if minor >= GEAR_SINCE_MINOR and len(data) > 16 else None
    return KeiserFrame(
        version=f"{major:x}.{minor:02x}",
        data_type=data[2],
        equipment_id=data[EQUIPMENT_ID_OFFSET],
        cadence_rpm=u16(4) / 10,
        heart_rate_bpm=heart_rate or None,
        power_w=u16(8),
        energy_kcal=u16(10),
        elapsed_s=data[12] * 60 + data[13],
        distance=(distance & 0x7FFF) / 10,
        distance_unit="km" if distance & 0x8000 else "mi",
        gear=gear,
    )


def encode_keiser_frame(frame: KeiserFrame) -> bytes:
    """The manufacturer data a console would broadcast for ``frame`` (tests, fake bikes)."""
    major_text, minor_text = frame.version.split(".")
    minutes, seconds = divmod(frame.elapsed_s, 60)
    distance = round(frame.distance * 10) | (0x8000 if frame.distance_unit == "km" else 0)
    body = bytes([int(major_text, 16), int(minor_text, 16), frame.data_type, frame.equipment_id])
    body += round(frame.cadence_rpm * 10).to_bytes(2, "little")
    body += round((frame.heart_rate_bpm or 0) * 10).to_bytes(2, "little")
    body += frame.power_w.to_bytes(2, "little") + frame.energy_kcal.to_bytes(2, "little")
    body += bytes([minutes, seconds]) + distance.to_bytes(2, "little")
    return body + (b"" if frame.gear is None else bytes([frame.gear]))


class BikeChooser:
    """Which advertisements are the chosen bike's, among every Keiser bike in the room.

    - ``address`` given: that device's, and no other's (with ``equipment_id`` too, both must
      match).
    - ``equipment_id`` given: the bike showing that id; the first address heard with it is
      kept, so two consoles set to one id do not mix. Another address takes over only after
      the kept one has been silent for ``lost_after`` seconds (the bike was swapped).
    - Neither: the first Keiser bike heard, kept the same way.

    Addresses are compared without regard to case (BlueZ writes them in upper case).
    """

    def __init__(self, *, equipment_id: int | None, address: str | None, lost_after: float) -> None:
        self._equipment_id = equipment_id
        self._address = address.upper() if address else None
        self._lost_after = lost_after
        self._kept: str | None = self._address
        self._kept_heard_at = float("-inf")

    @property
    def address(self) -> str | None:
        """The address listened to now, if one is known."""
        return self._kept

    def is_chosen_address(self, address: str) -> bool:
        """Whether ``address`` is the bike's: unreadable data from it is the bike's fault."""
        return self._kept is not None and address.upper() == self._kept

    def passes_over(self, address: str, data: bytes) -> bool:
        """Whether ``data`` from ``address`` is plainly another bike's: the id it shows is not
        the one asked for, and it does not come from the chosen address. A room's other bikes
        are passed over so, without parsing their frames."""
        return (
            self._equipment_id is not None
            and len(data) > EQUIPMENT_ID_OFFSET
            and data[EQUIPMENT_ID_OFFSET] != self._equipment_id
            and not self.is_chosen_address(address)
        )

    def claims(self, address: str, equipment_id: int, now: float) -> bool:
        """Whether a frame from ``address`` showing ``equipment_id``, heard at ``now``, is the
        chosen bike's (and note that the bike was heard)."""
        address = address.upper()
        if self._equipment_id is not None and equipment_id != self._equipment_id:
            return False
        if self._address is None and address != self._kept:
            if self._kept is not None and now - self._kept_heard_at <= self._lost_after:
                return False
            self._kept = address
        elif address != self._kept:
            return False
        self._kept_heard_at = now
        return True
