"""The Alleycat ride message, byte-compatible with the original sample.

Every second a rider publishes one JSON object with these fields, in this order::

    uuid, event, deviceTimestamp, second, raceId, name, racerId, classId, cadence, resistance

``raceId`` is the number of the 5-minute window the race started in, ``second`` counts 1..race
length, and ``event`` is ``final`` on the race's last second. ``output`` is the formula every
consumer uses to rank riders.
"""

from __future__ import annotations

import binascii
import json
import math
import random
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: A race window: ``raceId = floor(epoch_ms / RACE_WINDOW_MS)``.
RACE_WINDOW_MS = 300_000
#: Default race length in seconds (the original's five minutes).
DEFAULT_RACE_SECONDS = 300
#: Class ids the original backend knows.
CLASS_IDS = range(1, 7)
#: The analytics schema stores names as VARCHAR(8).
MAX_NAME_LENGTH = 8

_UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

FIELDS = (
    "uuid",
    "event",
    "deviceTimestamp",
    "second",
    "raceId",
    "name",
    "racerId",
    "classId",
    "cadence",
    "resistance",
)


class RideEvent(StrEnum):
    """What a message marks in the race."""

    UPDATE = "update"
    """Any second of the race but the last."""
    FINAL = "final"
    """The race's last second."""


class MessageError(ValueError):
    """A ride message that does not follow the schema."""


def output(cadence: float, resistance: float) -> float:
    """The rider's output ("power") as every Alleycat consumer computes it."""
    return ((cadence + 35) * (resistance + 65)) / 100


def race_id(epoch_ms: int) -> int:
    """The race id of a race that starts at ``epoch_ms``: its 5-minute window."""
    return epoch_ms // RACE_WINDOW_MS


# Where the 32 hex digits of a UUID go in its 36 characters (the rest are dashes).
_UUID_DIGIT_POSITIONS = [p for p in range(36) if p not in (8, 13, 18, 23)]
# The variant digit of an RFC 4122 UUID is 8, 9, a or b: two random bits under a fixed 0b10.
_UUID_VARIANT_DIGIT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_UUID_VARIANT_TEXT = dict(zip("0123456789abcdef", "89ab89ab89ab89ab", strict=True))
# Batches this large or larger are written by strided copies (cheaper per UUID from here on).
_STRIDED_FROM = 16


def uuid4_batch(rng: random.Random, count: int) -> list[str]:
    """``count`` random (version 4) UUIDs drawn from ``rng``, made many at a time.

    The same UUIDs as ``uuid.UUID(bytes=b, version=4)`` for consecutive 16-byte blocks ``b`` of
    ``rng.randbytes(16 * count)``, written with one strided copy per digit position instead of
    formatting each UUID: for large batches, about a tenth of the cost per UUID. A few UUIDs
    (a Locust user's rider sends alone) are formatted one by one, a fifth of the strided cost.
    """
    if count < _STRIDED_FROM:
        hexed_text = rng.randbytes(16 * count).hex()
        variant = _UUID_VARIANT_TEXT
        return [
            f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}"
            for h in (hexed_text[i : i + 32] for i in range(0, 32 * count, 32))
        ]
    hexed = binascii.hexlify(rng.randbytes(16 * count))
    text = bytearray(b"-" * (36 * count))
    for digit, position in enumerate(_UUID_DIGIT_POSITIONS):
        text[position::36] = hexed[digit::32]
    text[14::36] = b"4" * count
    text[19::36] = hexed[16::32].translate(_UUID_VARIANT_DIGIT)
    joined = text.decode()
    return [joined[i : i + 36] for i in range(0, 36 * count, 36)]


def uuid4(rng: random.Random) -> str:
    """A random (version 4) UUID drawn from ``rng``, so a seeded run repeats exactly."""
    return uuid4_batch(rng, 1)[0]


def tenths_texts(limit: int) -> list[str]:
    """How the message renders a one-decimal reading: ``texts[723] == "72.3"``, for 0..limit.

    The same text as ``repr(n / 10)`` (what :meth:`RideMessage.to_json` writes), found by
    indexing instead of formatting a float.
    """
    return [f"{n // 10}.{n % 10}" for n in range(limit + 1)]


@dataclass(frozen=True, slots=True, kw_only=True)
class RiderIdentity:
    """Who is riding: the fields that stay the same in every message of a rider."""

    racer_id: int
    name: str
    class_id: int

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= MAX_NAME_LENGTH:
            raise MessageError(f"name must be 1 to {MAX_NAME_LENGTH} characters: {self.name!r}")
        if self.class_id not in CLASS_IDS:
            raise MessageError(f"class id must be 1 to 6, not {self.class_id}")
        if self.racer_id < 0:
            raise MessageError(f"racer id must not be negative: {self.racer_id}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RideMessage:
    """One second of one rider's race."""

    uuid: str
    event: RideEvent
    device_timestamp: int
    """Epoch milliseconds on the device when the reading was taken."""
    second: int
    """Second of the race, 1..race length."""
    race_id: int
    name: str
    racer_id: int
    class_id: int
    cadence: float
    """Crank revolutions per minute."""
    resistance: float
    """The bike's resistance level."""

    @property
    def output(self) -> float:
        """The rider's output for this second."""
        return output(self.cadence, self.resistance)

    def to_json(self) -> bytes:
        """The message as the compact JSON the original devices published."""
        return MessageEncoder(
            RiderIdentity(racer_id=self.racer_id, name=self.name, class_id=self.class_id)
        ).encode(
            uuid=self.uuid,
            event=self.event,
            device_timestamp=self.device_timestamp,
            second=self.second,
            race_id=self.race_id,
            cadence=self.cadence,
            resistance=self.resistance,
        )

    def to_dict(self) -> dict[str, Any]:
        """The message as a dict keyed by the original JSON names."""
        return json.loads(self.to_json())  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, data: bytes | str) -> RideMessage:
        """Parse and validate a message; raise :class:`MessageError` if it is not one."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise MessageError("not a JSON object")
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RideMessage:
        """Validate a decoded message; raise :class:`MessageError` if it is not one."""
        missing = [name for name in FIELDS if name not in obj]
        if missing:
            raise MessageError(f"missing fields: {', '.join(missing)}")
        try:
            event = RideEvent(obj["event"])
        except ValueError as exc:
            raise MessageError(f"unknown event {obj['event']!r}") from exc
        uuid = obj["uuid"]
        if not isinstance(uuid, str) or not _UUID4_RE.match(uuid):
            raise MessageError(f"uuid is not a UUID v4: {uuid!r}")
        ints = {name: obj[name] for name in ("deviceTimestamp", "second", "raceId", "racerId")}
        ints["classId"] = obj["classId"]
        for name, value in ints.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise MessageError(f"{name} must be an integer, not {value!r}")
        for name in ("cadence", "resistance"):
            value = obj[name]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise MessageError(f"{name} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise MessageError(f"{name} must be finite")
        if not isinstance(obj["name"], str):
            raise MessageError("name must be a string")
        if obj["second"] < 1:
            raise MessageError(f"second must be at least 1, not {obj['second']}")
        return cls(
            uuid=uuid,
            event=event,
            device_timestamp=obj["deviceTimestamp"],
            second=obj["second"],
            race_id=obj["raceId"],
            name=obj["name"],
            racer_id=obj["racerId"],
            class_id=obj["classId"],
            cadence=float(obj["cadence"]),
            resistance=float(obj["resistance"]),
        )


class MessageEncoder:
    """Encodes one rider's messages quickly: the fields that never change are rendered once.

    The simulator encodes hundreds of thousands of messages a second with this; the agent uses
    it through :meth:`RideMessage.to_json`. Both produce the same bytes.
    """

    __slots__ = ("identity_json",)

    def __init__(self, identity: RiderIdentity) -> None:
        #: The rider's fields as they appear in every message: ``"name":..,"classId":3``.
        self.identity_json = (
            f'"name":{json.dumps(identity.name)},"racerId":{identity.racer_id},'
            f'"classId":{identity.class_id}'
        )

    def encode(
        self,
        uuid: str,
        event: str,
        device_timestamp: int,
        second: int,
        race_id: int,
        cadence: float,
        resistance: float,
    ) -> bytes:
        """Render one message as compact JSON bytes."""
        return (
            f'{{"uuid":"{uuid}","event":"{event}","deviceTimestamp":{device_timestamp},'
            f'"second":{second},"raceId":{race_id},{self.identity_json},'
            f'"cadence":{float(cadence)!r},"resistance":{float(resistance)!r}}}'
        ).encode()


@dataclass(frozen=True, slots=True)
class RacePosition:
    """Where one second of riding falls in a sequence of back-to-back races."""

    race_id: int
    second: int
    event: RideEvent


def race_position(first_race_start_ms: int, tick: int, race_seconds: int) -> RacePosition:
    """The race, second and event of the ``tick``-th second (from 0) since the first race began.

    Races follow each other without a pause: after ``race_seconds`` a new race starts, with the
    race id of the window its first second falls in.
    """
    race_number, offset = divmod(tick, race_seconds)
    start_ms = first_race_start_ms + race_number * race_seconds * 1000
    second = offset + 1
    event = RideEvent.FINAL if second == race_seconds else RideEvent.UPDATE
    return RacePosition(race_id(start_ms), second, event)
