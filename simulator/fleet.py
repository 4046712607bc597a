"""Virtual riders: who they are, how they ride, and when each one's messages fall due.

Each rider publishes once a second at its own phase within the second (real bikes are not
synchronised). :meth:`Fleet.emit_until` produces, in time order, every message due by a given
simulation time, as Kinesis records ready for the producer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from alleycat_rider.message import (
    _UUID4_CLEAR_MASK,
    _UUID4_VERSION_BITS,
    DEFAULT_RACE_SECONDS,
    MessageEncoder,
    RacePosition,
    RideEvent,
    RiderIdentity,
    race_position,
)
from alleycat_rider.physiology import (
    DEFAULT_BOUNDS,
    RIDER_NAMES,
    RideBounds,
    RiderModel,
    RiderProfile,
)
from simulator.batching import Record
from simulator.keys import Keyer

#: The original simulator numbered its racers from 100.
FIRST_RACER_ID = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    """The virtual riders to simulate."""

    riders: int = 1000
    classes: int = 6
    """Riders are dealt over class ids 1..classes."""
    race_seconds: int = DEFAULT_RACE_SECONDS
    phase_spread_ms: int = 1000
    """Each rider sends at a random offset in ``[0, phase_spread_ms)`` of every second."""
    bounds: RideBounds = DEFAULT_BOUNDS

    def __post_init__(self) -> None:
        if self.riders < 1:
            raise ValueError("a fleet needs at least one rider")
        if not 1 <= self.classes <= 6:
            raise ValueError("classes must be 1 to 6")
        if self.race_seconds < 1:
            raise ValueError("a race lasts at least one second")
        if not 0 <= self.phase_spread_ms <= 1000:
            raise ValueError("the phase spread is 0 to 1000 ms")


def rider_name(index: int) -> str:
    """A short display name for rider ``index`` (at most 8 characters)."""
    base = RIDER_NAMES[index % len(RIDER_NAMES)]
    return f"{base}{index // len(RIDER_NAMES)}"[:8]


class VirtualRider:
    """One simulated rider: identity, legs, and the offset in each second it sends at."""

    __slots__ = ("identity", "model", "encoder", "phase_ms", "best_output")

    def __init__(self, identity: RiderIdentity, model: RiderModel, phase_ms: int) -> None:
        self.identity = identity
        self.model = model
        self.encoder = MessageEncoder(identity)
        self.phase_ms = phase_ms
        #: The rider's best output in the current race: what the leaderboard ranks.
        self.best_output = 0.0


class Fleet:
    """All virtual riders and the schedule of their messages.

    Args:
        config: the riders to simulate.
        start: simulation time (epoch seconds) the first race starts at.
        duration: seconds to ride; each rider sends one message per second.
        keyer: the partition-key function (see :func:`simulator.keys.make_keyer`).
        rng: the randomness of everything the riders do.
    """

    def __init__(
        self,
        config: FleetConfig,
        *,
        start: float,
        duration: int,
        keyer: Keyer,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.duration = duration
        self._keyer = keyer
        self._rng = rng
        self._start_ms = int(round(start * 1000))
        spread = config.phase_spread_ms
        riders = []
        for i in range(config.riders):
            identity = RiderIdentity(
                racer_id=FIRST_RACER_ID + i, name=rider_name(i), class_id=i % config.classes + 1
            )
            model = RiderModel(RiderProfile.draw(rng), config.bounds)
            phase = int(rng.random() * spread)
            riders.append(VirtualRider(identity, model, phase))
        #: Riders in the order they send within a second.
        self.riders = riders
        self._order = sorted(range(len(riders)), key=lambda i: riders[i].phase_ms)
        self._tick = 0
        self._cursor = 0
        self._position: RacePosition = race_position(self._start_ms, 0, config.race_seconds)
        self.generated = 0
        #: Race second of the most recent message (for progress displays).
        self.race = self._position

    @property
    def total(self) -> int:
        """Messages the whole run will produce."""
        return self.config.riders * self.duration

    @property
    def done(self) -> bool:
        """True once every message of the run has been produced."""
        return self._tick >= self.duration

    @property
    def next_due(self) -> float | None:
        """Simulation time of the next message, or None when done."""
        if self.done:
            return None
        rider = self.riders[self._order[self._cursor]]
        return (self._start_ms + self._tick * 1000 + rider.phase_ms) / 1000

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        """Produce every message due by ``now``, at most ``limit``, appending each to ``out``.

        Returns how many were produced. Messages held back by ``limit`` keep their scheduled
        timestamps and come out on a later call, late.
        """
        now_ms = now * 1000
        start_ms = self._start_ms
        riders, order = self.riders, self._order
        count, n = 0, len(order)
        rng, keyer = self._rng, self._keyer
        getrandbits = rng.getrandbits
        race_seconds = self.config.race_seconds
        tick, cursor, position = self._tick, self._cursor, self._position
        second_ms = start_ms + tick * 1000
        event, second, race = str(position.event), position.second, position.race_id
        append = out.append
        duration = self.duration
        # The hot loop of the simulator: locals only, one message per pass.
        while count < limit:
            index = order[cursor]
            rider = riders[index]
            timestamp_ms = second_ms + rider.phase_ms
            if timestamp_ms > now_ms:
                break
            cadence, resistance = rider.model.step(rng)
            power = (cadence + 35) * (resistance + 65) / 100
            if power > rider.best_output:
                rider.best_output = power
            h = f"{(getrandbits(128) & _UUID4_CLEAR_MASK) | _UUID4_VERSION_BITS:032x}"
            data = rider.encoder.encode(
                f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                event,
                timestamp_ms,
                second,
                race,
                cadence,
                resistance,
            )
            key, explicit = keyer(index, timestamp_ms)
            append(Record(data, key, explicit, timestamp_ms / 1000, index))
            count += 1
            cursor += 1
            if cursor == n:
                cursor = 0
                tick += 1
                second_ms += 1000
                if tick >= duration:
                    break
                position = race_position(start_ms, tick, race_seconds)
                event, second, race = str(position.event), position.second, position.race_id
                if second == 1:
                    self._start_race()
        self._tick, self._cursor, self._position = tick, cursor, position
        self.race = position
        self.generated += count
        return count

    def _start_race(self) -> None:
        for rider in self.riders:
            rider.model.start_race()
            rider.best_output = 0.0

    def leaderboard(self, per_class: int = 5) -> dict[int, list[tuple[str, int, float]]]:
        """The top riders of the current race by best output: class id -> (name, racer, output)."""
        board: dict[int, list[tuple[str, int, float]]] = {}
        for rider in self.riders:
            ident = rider.identity
            board.setdefault(ident.class_id, []).append(
                (ident.name, ident.racer_id, round(rider.best_output, 1))
            )
        return {
            class_id: sorted(rows, key=lambda row: -row[2])[:per_class]
            for class_id, rows in sorted(board.items())
        }


__all__ = ["FIRST_RACER_ID", "Fleet", "FleetConfig", "RideEvent", "VirtualRider", "rider_name"]
