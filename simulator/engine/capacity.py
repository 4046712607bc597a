"""Capacity modes: a provisioned stream's fixed shards, and how an on-demand stream grows.

Pure: the policy decides how many shards an on-demand stream needs from the write rates it has
seen, and :func:`split_shards` is the reshard that gets it there. The built-in stream
(:class:`simulator.engine.shards.LocalStream`) applies both.

What AWS publishes (Kinesis developer guide, checked 2026-12) and what is assumed here:

- A new on-demand stream takes 4 MiB/s of writes at once (published). That it has 4 shards is
  not published (moto uses 4): :attr:`OnDemandPolicy.initial_shards`.
- It scales toward twice the highest write rate it has seen (published: up to 2x the peak of the
  last 30 days; a run here is far shorter than 30 days, so no peak is forgotten). Writes that
  more than double the previous peak may throttle until it has scaled (published); how long a
  scale-out takes is not: :attr:`OnDemandPolicy.scale_out_seconds`.
- It scales out by splitting shards, as SplitShard does: a parent is closed and two children with
  new ids share its hash range. Which shards AWS splits is not published: here the widest first.
- No scale-in during a run (none is published for On-demand Standard).
- Per-shard limits (1,000 records/s, 1 MiB/s) hold in every mode, so one hot partition key still
  throttles at one shard's limit however large the stream.
- On-demand Advantage's warm throughput is write capacity available at once: the stream starts
  with enough shards for it, and grows above it as Standard does.
- The write ceiling is 10 GiB/s in us-east-1, us-west-2 and eu-west-1, 200 MiB/s elsewhere
  (published, raisable): :attr:`OnDemandPolicy.max_write_mibps`.

The records a run writes are the rate's measure: what the stream accepted in a second. Throttled
entries are not counted, so a jump far above the peak is met in doublings, each after a
scale-out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from simulator.engine.sink import Shard

MIB = 1024 * 1024


class CapacityMode(StrEnum):
    """How a stream's write capacity is decided (and billed)."""

    PROVISIONED = "provisioned"
    """A fixed shard count, billed per shard-hour and PUT payload unit."""
    ON_DEMAND = "on-demand"
    """On-demand Standard: scales by itself, billed per stream-hour and GB written."""
    ON_DEMAND_ADVANTAGE = "on-demand-advantage"
    """On-demand with the account's minimum throughput commitment: warm throughput, lower
    price per GB, no stream-hour charge, a monthly floor."""

    @property
    def on_demand(self) -> bool:
        """Whether the stream scales by itself (either on-demand mode)."""
        return self is not CapacityMode.PROVISIONED


@dataclass(frozen=True, slots=True, kw_only=True)
class OnDemandPolicy:
    """How an on-demand stream is sized; the unpublished figures are parameters with defaults.

    Args:
        initial_shards: Shards of a new on-demand stream (unpublished; 4 gives the published
            4 MiB/s at 1 MiB/s a shard).
        scale_out_seconds: From the second a higher peak is seen to the split that meets it
            (unpublished).
        headroom: Capacity kept over the highest write rate seen (published: twice).
        max_write_mibps: The stream's write ceiling (published: 10 GiB/s in the largest
            regions, 200 MiB/s elsewhere).
        warm_throughput_mibps: On-demand Advantage: write capacity available from the start.
    """

    initial_shards: int = 4
    scale_out_seconds: float = 60.0
    headroom: float = 2.0
    max_write_mibps: float = 10_240.0
    warm_throughput_mibps: float = 0.0

    def __post_init__(self) -> None:
        if self.initial_shards < 1:
            raise ValueError("an on-demand stream starts with at least one shard")
        if self.scale_out_seconds < 0:
            raise ValueError("a scale-out cannot take negative time")
        if self.headroom < 1:
            raise ValueError("the headroom is at least 1 (the peak itself)")
        if self.max_write_mibps < 1:
            raise ValueError("the write ceiling is at least 1 MiB/s")
        if not 0 <= self.warm_throughput_mibps <= self.max_write_mibps:
            raise ValueError("warm throughput is 0 up to the write ceiling")

    def starting_shards(self, shard_bytes_per_second: int) -> int:
        """Shards of a new stream: the default, or enough for the warm throughput."""
        warm = math.ceil(self.warm_throughput_mibps * MIB / shard_bytes_per_second)
        return max(self.initial_shards, warm)

    def shards_needed(
        self,
        peak_records_per_second: int,
        peak_bytes_per_second: int,
        *,
        shard_records_per_second: int,
        shard_bytes_per_second: int,
    ) -> int:
        """Shards for ``headroom`` times the peak write rate, within the write ceiling."""
        by_records = math.ceil(self.headroom * peak_records_per_second / shard_records_per_second)
        by_bytes = math.ceil(self.headroom * peak_bytes_per_second / shard_bytes_per_second)
        ceiling = max(1, int(self.max_write_mibps * MIB // shard_bytes_per_second))
        wanted = max(by_records, by_bytes, self.starting_shards(shard_bytes_per_second))
        return min(wanted, ceiling)


DEFAULT_ON_DEMAND_POLICY = OnDemandPolicy()


def split_shards(
    shards: Sequence[Shard], target: int, next_index: int
) -> tuple[list[Shard], list[Shard]]:
    """Split open shards, widest first, until there are ``target`` of them.

    Each split closes a parent and opens two children that share its hash range at its
    midpoint, with new ids from ``shardId-<next_index>`` on (as SplitShard does). The open
    shards cover the hash space exactly once before and after.

    Returns:
        The open shards in hash-key order, and the parents closed.
    """
    open_shards = list(shards)
    closed: list[Shard] = []
    index = next_index
    while len(open_shards) < target:
        widest = max(
            open_shards,
            key=lambda s: (s.ending_hash_key - s.starting_hash_key, -s.starting_hash_key),
        )
        if widest.ending_hash_key == widest.starting_hash_key:
            break  # every shard holds one hash key: nothing left to split
        middle = widest.midpoint
        low = Shard(f"shardId-{index:012d}", widest.starting_hash_key, middle, widest.shard_id)
        high = Shard(
            f"shardId-{index + 1:012d}", middle + 1, widest.ending_hash_key, widest.shard_id
        )
        index += 2
        open_shards.remove(widest)
        open_shards += [low, high]
        closed.append(widest)
    return sorted(open_shards, key=lambda s: s.starting_hash_key), closed
