"""Virtual riders: who they are, how they ride, and when each one's messages fall due.

Each rider publishes once a second at its own phase within the second (real bikes are not
synchronised). :meth:`Fleet.emit_until` produces, in time order, every message due by a given
simulation time, as Kinesis records ready for the producer.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from alleycat_rider.core.message import (
    DEFAULT_RACE_SECONDS,
    MessageEncoder,
    RacePosition,
    RiderIdentity,
    race_position,
    tenths_texts,
    uuid4_batch,
)
from alleycat_rider.core.physiology import (
    DEFAULT_BOUNDS,
    RIDER_NAMES,
    RideBounds,
    RiderModel,
    RiderProfile,
)
from simulator.engine.batching import Record
from simulator.engine.keys import Keyer

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
    first_rider: int = 0
    """The fleet's first rider in a larger fleet split over processes: rider ``i`` here is
    racer ``FIRST_RACER_ID + first_rider + i``, named and classed as that rider."""
    ramp_seconds: int = 0
    """Riders join over this many seconds (a race start): rider ``i`` of N sends from second
    ``i * ramp_seconds // N`` on. 0: every rider from the first second."""

    def __post_init__(self) -> None:
        if self.ramp_seconds < 0:
            raise ValueError("the ramp cannot be negative")
        if self.first_rider < 0:
            raise ValueError("the first rider's number cannot be negative")
        if self.riders < 1:
            raise ValueError("a fleet needs at least one rider")
        if not 1 <= self.classes <= 6:
            raise ValueError("classes must be 1 to 6")
        if self.race_seconds < 1:
            raise ValueError("a race lasts at least one second")
        if not 0 <= self.phase_spread_ms <= 1000:
            raise ValueError("the phase spread is 0 to 1000 ms")


def join_second(index: int, riders: int, ramp_seconds: int) -> int:
    """The second rider ``index`` of ``riders`` sends its first message in, ramping up over
    ``ramp_seconds``."""
    return index * ramp_seconds // riders


def fleet_messages(riders: int, duration: int, ramp_seconds: int = 0) -> int:
    """Messages a fleet sends in ``duration`` seconds when its riders join over the ramp."""
    return sum([max(0, duration - join_second(i, riders, ramp_seconds)) for i in range(riders)])


def rider_name(index: int) -> str:
    """A short display name for rider ``index`` (at most 8 characters)."""
    base = RIDER_NAMES[index % len(RIDER_NAMES)]
    return f"{base}{index // len(RIDER_NAMES)}"[:8]


class VirtualRider:
    """One simulated rider: identity, legs, and the offset in each second it sends at."""

    __slots__ = ("index", "identity", "model", "identity_json", "phase_ms", "best")

    def __init__(
        self, index: int, identity: RiderIdentity, model: RiderModel, phase_ms: int
    ) -> None:
        #: Position in the fleet (what keyers and stats call the rider).
        self.index = index
        self.identity = identity
        self.model = model
        self.identity_json = MessageEncoder(identity).identity_json
        self.phase_ms = phase_ms
        #: The rider's best output in the current race, what the leaderboard ranks, times
        #: 10,000: ``(cadence + 35) * (resistance + 65)`` in tenths, kept as an integer.
        self.best = 0

    @property
    def best_output(self) -> float:
        """The best output of the current race."""
        return self.best / 10_000


class Fleet:
    """All virtual riders and the schedule of their messages.

    Args:
        config: the riders to simulate.
        start: simulation time (epoch seconds) the first race starts at.
        duration: seconds to ride; each rider sends one message per second.
        keyer: the partition-key function (see :func:`simulator.engine.keys.make_keyer`).
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
        first = config.first_rider
        for i in range(config.riders):
            identity = RiderIdentity(
                racer_id=FIRST_RACER_ID + first + i,
                name=rider_name(first + i),
                class_id=(first + i) % config.classes + 1,
            )
            model = RiderModel(RiderProfile.draw(rng), config.bounds)
            phase = int(rng.random() * spread)
            riders.append(VirtualRider(i, identity, model, phase))
        self.riders = riders
        #: Riders in the order they send within a second, and their offsets in it.
        self._by_phase = sorted(riders, key=lambda r: r.phase_ms)
        self._phases = [r.phase_ms for r in self._by_phase]
        self._indices = [r.index for r in self._by_phase]
        bounds = config.bounds
        self._texts = tenths_texts(int(10 * max(bounds.cadence_max, bounds.resistance_max)) + 1)
        # UUIDs draw from their own generator, so riders' behaviour does not depend on them.
        self._uuid_rng = random.Random(rng.getrandbits(64))
        #: The second each rider (by index) joins in; the ramp's last second is before
        #: ``_ramp_ticks``.
        self._joins = [
            join_second(i, config.riders, config.ramp_seconds) for i in range(config.riders)
        ]
        self._ramp_ticks = max(self._joins)
        self._total = fleet_messages(config.riders, duration, config.ramp_seconds)
        self._tick = 0
        self._cursor = 0
        self._position: RacePosition = race_position(self._start_ms, 0, config.race_seconds)
        self.generated = 0

    @property
    def total(self) -> int:
        """Messages the whole run will produce."""
        return self._total

    @property
    def done(self) -> bool:
        """True once every message of the run has been produced."""
        return self._tick >= self.duration

    @property
    def next_due(self) -> float | None:
        """Simulation time of the next message, or None when done."""
        if self.done:
            return None
        return (self._start_ms + self._tick * 1000 + self._phases[self._cursor]) / 1000

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        """Produce every message due by ``now``, at most ``limit``, appending each to ``out``.

        Returns how many were produced. Messages held back by ``limit`` keep their scheduled
        timestamps and come out on a later call, late.
        """
        count = 0
        first = len(out)
        n = len(self._by_phase)
        now_ms = now * 1000
        while count < limit and self._tick < self.duration:
            second_ms = self._start_ms + self._tick * 1000
            due = bisect.bisect_right(self._phases, now_ms - second_ms)
            end = min(due, self._cursor + limit - count)
            if end <= self._cursor:
                break
            if self._tick < self._ramp_ticks:
                self._emit_joined(self._cursor, end, second_ms, now, out)
            else:
                self._emit_slice(self._cursor, end, second_ms, now, out)
            count += end - self._cursor
            self._cursor = end
            if end < n:
                break
            self._cursor = 0
            self._tick += 1
            if self._tick < self.duration:
                self._position = race_position(self._start_ms, self._tick, self.config.race_seconds)
                if self._position.second == 1:
                    self._start_race()
        # ``count`` is of riders' turns; in the ramp, those who have not joined send nothing.
        made = len(out) - first
        self.generated += made
        return made

    def _emit_joined(self, lo: int, hi: int, second_ms: int, now: float, out: list[Record]) -> None:
        """:meth:`_emit_slice` for a second of the ramp: only riders who have joined send."""
        tick, joins, by_phase = self._tick, self._joins, self._by_phase
        for k in range(lo, hi):
            if joins[by_phase[k].index] <= tick:
                self._emit_slice(k, k + 1, second_ms, now, out)

    def _emit_slice(self, lo: int, hi: int, second_ms: int, now: float, out: list[Record]) -> None:
        """The messages of riders ``lo:hi`` (in phase order) for the second at ``second_ms``.

        This is the simulator's hot path. UUIDs and keys are made for the whole slice at once;
        each message is one f-string in the field order of
        :class:`~alleycat_rider.core.message.RideMessage`, with readings in tenths looked up as
        text.
        """
        rng = self._rng
        texts = self._texts
        position = self._position
        # What every message of this second shares, before and after the device timestamp.
        head = f'","event":"{position.event}","deviceTimestamp":'
        tail = f',"second":{position.second},"raceId":{position.race_id},'
        timestamps = [second_ms + phase for phase in self._phases[lo:hi]]
        keys = self._keyer(self._indices[lo:hi], timestamps)
        uuids = uuid4_batch(self._uuid_rng, hi - lo)
        for rider, uuid, timestamp_ms, (key, explicit) in zip(
            self._by_phase[lo:hi], uuids, timestamps, keys, strict=True
        ):
            cadence, resistance = rider.model.step_tenths(rng)
            output = (cadence + 350) * (resistance + 650)
            if output > rider.best:
                rider.best = output
            data = (
                f'{{"uuid":"{uuid}{head}{timestamp_ms}{tail}{rider.identity_json},'
                f'"cadence":{texts[cadence]},"resistance":{texts[resistance]}}}'
            )
            out.append(Record(data.encode(), key, explicit, timestamp_ms / 1000, rider.index, now))

    def flush(self, now: float, out: list[Record]) -> None:
        """Nothing to add: a fleet holds no messages back."""

    def _start_race(self) -> None:
        for rider in self.riders:
            rider.model.start_race()
            rider.best = 0

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
