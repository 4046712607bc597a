"""Riders that join and leave a worker's fleet while it runs: what a Locust user rides.

Pure: times and randomness are arguments. Each Locust user brings a fixed group of riders (one
by default), made by the engine's :class:`~simulator.engine.fleet.Fleet`; a worker process holds
them all in one :class:`RiderGroups`, the record source of its one producer.

Racer ids are dealt by worker index, so riders are unique across workers: worker ``w`` owns the
block of riders ``w * RIDERS_PER_WORKER`` onwards, and its ``n``-th user rides the ``n``-th group
of that block. A rider's global number ``g`` is racer id ``FIRST_RACER_ID + g`` everywhere.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.engine.batching import Record
from simulator.engine.fleet import FIRST_RACER_ID, Fleet, FleetConfig
from simulator.engine.keys import Keyer, KeyList, PartitionKeyStrategy, make_keyer
from simulator.engine.sink import Shard

#: Riders one worker process deals at most: worker ``w``'s riders are numbered from
#: ``w * RIDERS_PER_WORKER``. A worker carries far fewer (see the README).
RIDERS_PER_WORKER = 1_000_000
#: Seconds a user's riders go on riding, race after race, unless the user stops first.
RIDE_SECONDS = 7 * 24 * 3600


def first_rider(worker_index: int, group: int, riders_per_user: int) -> int:
    """The global number of the first rider of a worker's ``group``-th user.

    Raises:
        ValueError: The worker's block of riders is used up.
    """
    if worker_index < 0:
        raise ValueError("a worker index cannot be negative")
    offset = group * riders_per_user
    if offset + riders_per_user > RIDERS_PER_WORKER:
        raise ValueError(f"a worker deals at most {RIDERS_PER_WORKER:,} riders")
    return worker_index * RIDERS_PER_WORKER + offset


def balanced_key(rider: int, shards: Sequence[Shard]) -> tuple[str, str]:
    """Global rider ``rider`` on shard ``rider mod N``, at an explicit hash key in its range.

    What ``simulate --partition-key balanced`` deals (racer id ``100 + i`` on the i-th shard,
    the rule ``alleycat verify`` checks), computed from the rider alone so that every worker
    agrees. Riders of one shard are spread over its range by the bit-reversed slot (a van der
    Corput sequence), so a later split still divides them evenly.
    """
    ordered = sorted(shards, key=lambda s: s.starting_hash_key)
    shard = ordered[rider % len(ordered)]
    slot = rider // len(ordered)
    bits = slot.bit_length()
    reversed_slot = int(f"{slot:0{bits}b}"[::-1], 2) if bits else 0
    width = shard.ending_hash_key - shard.starting_hash_key + 1
    offset = (reversed_slot * width) >> bits
    return str(FIRST_RACER_ID + rider), str(shard.starting_hash_key + offset)


def group_keyer(
    strategy: PartitionKeyStrategy,
    config: FleetConfig,
    shards: Sequence[Shard],
    rng: random.Random,
) -> Keyer:
    """The partition keys of a group of riders, as the engine keys a whole fleet."""
    first = config.first_rider
    numbers = range(first, first + config.riders)
    if strategy is PartitionKeyStrategy.BALANCED:
        keys: KeyList = [balanced_key(g, shards) for g in numbers]

        def balanced(riders: Sequence[int], timestamps_ms: Sequence[int]) -> KeyList:
            return [keys[rider] for rider in riders]

        return balanced
    return make_keyer(
        strategy,
        racer_ids=[FIRST_RACER_ID + g for g in numbers],
        class_ids=[g % config.classes + 1 for g in numbers],
        shards=shards,
        rng=rng,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSettings:
    """What every group of riders on a worker shares."""

    riders_per_user: int = 1
    classes: int = 6
    race_seconds: int = 300
    phase_spread_ms: int = 1000
    strategy: PartitionKeyStrategy = PartitionKeyStrategy.RANDOM
    seed: int | None = None
    """With a seed, a rider rides the same way whichever worker and run it is on."""

    def __post_init__(self) -> None:
        if not 1 <= self.riders_per_user <= RIDERS_PER_WORKER:
            raise ValueError(f"riders per user must be 1 to {RIDERS_PER_WORKER:,}")


class RiderGroups:
    """The riders of a worker's users, as one record source for the engine's run loop.

    Args:
        settings: what the groups share.
        worker_index: the worker's index (Locust's ``runner.worker_index``).
        shards: the stream's open shards, for keys.
    """

    def __init__(self, settings: GroupSettings, worker_index: int, shards: Sequence[Shard]) -> None:
        self.settings = settings
        self.worker_index = worker_index
        self._shards = tuple(shards)
        self._groups = 0
        #: Group number -> its fleet, for the groups still riding.
        self._riding: dict[int, Fleet] = {}
        #: (next due, group) of each riding group; stale entries are skipped.
        self._due: list[tuple[float, int]] = []
        self._closed = False
        self.peak_riders = 0

    @property
    def riders(self) -> int:
        """Riders riding now."""
        return len(self._riding) * self.settings.riders_per_user

    def join(self, now: float) -> int:
        """A new user's riders start riding at ``now``; returns the group's number.

        Raises:
            ValueError: The worker's block of racer ids is used up.
        """
        settings = self.settings
        group = self._groups
        start = first_rider(self.worker_index, group, settings.riders_per_user)
        config = FleetConfig(
            riders=settings.riders_per_user,
            classes=settings.classes,
            race_seconds=settings.race_seconds,
            phase_spread_ms=settings.phase_spread_ms,
            first_rider=start,
        )
        rng = (
            random.Random() if settings.seed is None else random.Random(f"{settings.seed}:{start}")
        )
        keyer = self._keyer(config, random.Random(rng.random()))
        fleet = Fleet(config, start=now, duration=RIDE_SECONDS, keyer=keyer, rng=rng)
        self._groups += 1
        self._riding[group] = fleet
        self._push(group, fleet)
        self.peak_riders = max(self.peak_riders, self.riders)
        return group

    def _keyer(self, config: FleetConfig, rng: random.Random) -> Keyer:
        """The partition keys of a new group's riders."""
        return group_keyer(self.settings.strategy, config, self._shards, rng)

    def leave(self, group: int) -> None:
        """A user stopped: its riders send nothing more."""
        self._riding.pop(group, None)

    def close(self) -> None:
        """The test is over: nobody sends any more (what is buffered is still delivered)."""
        self._closed = True
        self._riding.clear()
        self._due.clear()

    @property
    def done(self) -> bool:
        """True once the test is over."""
        return self._closed

    @property
    def next_due(self) -> float | None:
        """When the next message falls due, or None with nobody riding."""
        due = self._due
        while due and due[0][1] not in self._riding:
            heapq.heappop(due)
        return due[0][0] if due else None

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        """Append every message due by ``now``, at most ``limit``; return how many."""
        count = 0
        due = self._due
        while count < limit and self.next_due is not None and due[0][0] <= now:
            _, group = heapq.heappop(due)
            fleet = self._riding[group]
            count += fleet.emit_until(now, out, limit - count)
            self._push(group, fleet)
        return count

    def flush(self, now: float, out: list[Record]) -> None:
        """Nothing to add: riders hold no messages back."""

    def leaderboard(self, per_class: int = 5) -> dict[int, list[tuple[str, int, float]]]:
        """No leaderboard across groups (Locust's web UI shows the run instead)."""
        return {}

    def _push(self, group: int, fleet: Fleet) -> None:
        at = fleet.next_due
        if at is None:
            self._riding.pop(group, None)
        else:
            heapq.heappush(self._due, (at, group))
