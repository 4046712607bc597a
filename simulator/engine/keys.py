"""Partition-key strategies: how records are spread over a stream's shards.

Each strategy trades load balance against per-rider ordering; ``alleycat compare`` measures them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from enum import StrEnum

from simulator.engine.sink import Shard

#: The ``(partition_key, explicit_hash_key)`` of each record in a slice.
KeyList = list[tuple[str, str | None]]


class PartitionKeyStrategy(StrEnum):
    """Which partition key (and explicit hash key) a record is written with."""

    RANDOM = "random"
    TIME = "time"
    CLASS = "class"
    RACER = "racer"
    BALANCED = "balanced"
    AUTO = "auto"


#: What each strategy does and what it trades away (shown by ``--help`` and the README).
STRATEGY_TRADE_OFFS: dict[PartitionKeyStrategy, str] = {
    PartitionKeyStrategy.RANDOM: (
        "a new random number per record, as the original simulator did. Spreads evenly over "
        "the shards, but a rider's messages scatter over all of them: per-rider order is lost."
    ),
    PartitionKeyStrategy.TIME: (
        "the device timestamp in ms, like the IoT rule's ${timestamp()}. Records made in the "
        "same millisecond share a shard, so synchronised riders pile onto one shard and throttle."
    ),
    PartitionKeyStrategy.CLASS: (
        "the class id. Each class is pinned to one shard and capped at that shard's 1,000 "
        "records/s; with 6 classes at most 6 shards carry load, and a big class throttles."
    ),
    PartitionKeyStrategy.RACER: (
        "the racer id. A rider's messages stay in order on one shard; MD5 spreads riders "
        "unevenly when there are few riders per shard."
    ),
    PartitionKeyStrategy.BALANCED: (
        "the racer id, with an ExplicitHashKey that deals riders round-robin over the shards' "
        "hash ranges: even load and per-rider order, but the map must be rebuilt after "
        "resharding (the simulator rebuilds it when the built-in stream splits)."
    ),
    PartitionKeyStrategy.AUTO: (
        "no partition key: the stream spreads records over its shards itself (service-managed "
        "distribution, on-demand streams only). Even load with no key to choose, but no order "
        "at all, and no KPL aggregation or buffered batching."
    ),
}

#: Strategies whose records carry no key; they need a stream that spreads records itself.
KEYLESS = frozenset({PartitionKeyStrategy.AUTO})


#: ``keyer(riders, timestamps_ms)``: the ``(partition_key, explicit_hash_key)`` of each record,
#: for records of rider ``riders[i]`` made at ``timestamps_ms[i]``. A whole slice at a time,
#: because the simulator keys hundreds of thousands of records a second.
Keyer = Callable[[Sequence[int], Sequence[int]], KeyList]


def make_keyer(
    strategy: PartitionKeyStrategy,
    *,
    racer_ids: Sequence[int],
    class_ids: Sequence[int],
    shards: Sequence[Shard],
    rng: random.Random,
) -> Keyer:
    """The key function of ``strategy`` for a fleet whose rider ``i`` has ``racer_ids[i]``."""
    if strategy is PartitionKeyStrategy.RANDOM:

        def random_keys(riders: Sequence[int], timestamps_ms: Sequence[int]) -> KeyList:
            return [(key, None) for key in random_numeric_keys(rng, len(riders))]

        return random_keys
    if strategy is PartitionKeyStrategy.TIME:

        def time_keys(riders: Sequence[int], timestamps_ms: Sequence[int]) -> KeyList:
            return [(str(timestamp), None) for timestamp in timestamps_ms]

        return time_keys
    if strategy is PartitionKeyStrategy.AUTO:

        def no_keys(riders: Sequence[int], timestamps_ms: Sequence[int]) -> KeyList:
            return [NO_KEY] * len(riders)

        return no_keys
    return RiderKeys(strategy, racer_ids=racer_ids, class_ids=class_ids, shards=shards)


#: The key of a record sent without one (``auto``): nothing goes on the wire for it.
NO_KEY: tuple[str, str | None] = ("", None)


class RiderKeys:
    """Each rider's own key, for ``class``, ``racer`` and ``balanced``: a keyer.

    ``balanced`` deals riders over the shards it was given; :meth:`reshard` deals them again
    over the shards a split left open.
    """

    def __init__(
        self,
        strategy: PartitionKeyStrategy,
        *,
        racer_ids: Sequence[int],
        class_ids: Sequence[int],
        shards: Sequence[Shard],
    ) -> None:
        self.strategy = strategy
        self._racer_ids = list(racer_ids)
        self.per_rider: KeyList
        if strategy is PartitionKeyStrategy.CLASS:
            self.per_rider = [(str(c), None) for c in class_ids]
        elif strategy is PartitionKeyStrategy.BALANCED:
            self.per_rider = balanced_keys(racer_ids, shards)
        else:
            self.per_rider = [(str(r), None) for r in racer_ids]

    def __call__(self, riders: Sequence[int], timestamps_ms: Sequence[int]) -> KeyList:
        per_rider = self.per_rider
        return [per_rider[rider] for rider in riders]

    def reshard(self, shards: Sequence[Shard]) -> bool:
        """Deal ``balanced`` riders over ``shards``; True if the keys changed."""
        if self.strategy is not PartitionKeyStrategy.BALANCED:
            return False
        self.per_rider = balanced_keys(self._racer_ids, shards)
        return True


#: Digits in a random partition key: as many as a 64-bit number has, short of overflowing one.
RANDOM_KEY_DIGITS = 18
# Each random byte becomes one digit: 0-5 come up 26 times in 256 and 6-9 25 times, a bias no
# consumer can notice once MD5 has hashed the key.
_DIGIT_OF_BYTE = bytes(b"0123456789"[byte % 10] for byte in range(256))


def random_numeric_keys(rng: random.Random, count: int) -> list[str]:
    """``count`` random numeric partition keys, made from one draw of random bytes.

    The original simulator's random numbers, without formatting an integer per record.
    """
    digits = rng.randbytes(RANDOM_KEY_DIGITS * count).translate(_DIGIT_OF_BYTE).decode()
    return [digits[i : i + RANDOM_KEY_DIGITS] for i in range(0, len(digits), RANDOM_KEY_DIGITS)]


def balanced_keys(racer_ids: Sequence[int], shards: Sequence[Shard]) -> KeyList:
    """Rider ``i`` goes to shard ``i mod N``, at an explicit hash key inside that shard's range.

    Riders on one shard get distinct hash keys spread through its range, so a later split of the
    shard still divides them evenly.
    """
    ordered = sorted(shards, key=lambda s: s.starting_hash_key)
    count = len(ordered)
    per_shard = -(-len(racer_ids) // count) if racer_ids else 1
    keys: KeyList = []
    for i, racer in enumerate(racer_ids):
        shard = ordered[i % count]
        width = shard.ending_hash_key - shard.starting_hash_key + 1
        slot = i // count
        offset = (2 * slot + 1) * width // (2 * per_shard)
        keys.append((str(racer), str(shard.starting_hash_key + offset)))
    return keys
