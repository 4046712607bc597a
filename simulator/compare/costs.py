"""What a stream would cost a month, from what a run wrote.

The prices are the widely quoted us-east-1 figures (see ``/work/shared/reference/kinesis.md``);
they are not fetched from AWS. Check them against https://aws.amazon.com/kinesis/data-streams/pricing/
before quoting a cost, and override them (``alleycat compare --price-...``) for another region.

- Provisioned: shard-hours, plus PUT payload units (each started 25 KB of a record).
- On-demand (Standard): data written, each record rounded up to the next KB, plus stream-hours.
- On-demand Advantage: data written (rounded as Standard, assumed) at a lower price, no
  stream-hours, and at least the account's minimum commitment: 25 MiB/s of ingest billed
  whether used or not (AWS, 2025-11-03). The commitment is the account's, shared by its
  streams, and comes with 25 MiB/s of retrieval too (not counted here: reads are not modelled).

The Advantage price per GB is a third party's figure (AWS says "about 60% lower"); the others
are the widely quoted ones. Checked 2026-12; none is fetched.

A month is 730 hours; a KB is 1,024 bytes and a GB 1,024³ bytes, as AWS bills data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
KB = 1024
GB = 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class Prices:
    """Kinesis Data Streams prices, in US dollars (quoted us-east-1 figures: check them)."""

    shard_hour: float = 0.015
    """Provisioned: one shard for one hour."""
    put_units_million: float = 0.014
    """Provisioned: one million PUT payload units."""
    on_demand_stream_hour: float = 0.04
    """On-demand: one stream for one hour."""
    on_demand_gb: float = 0.08
    """On-demand: one GB written (records rounded up to whole KB)."""
    advantage_gb: float = 0.032
    """On-demand Advantage: one GB written (a third party's figure)."""
    advantage_commitment_mibps: float = 25.0
    """On-demand Advantage: the ingest the account is billed for at least, in MiB/s."""

    def __post_init__(self) -> None:
        names = ("shard_hour", "put_units_million", "on_demand_stream_hour", "on_demand_gb",
                 "advantage_gb", "advantage_commitment_mibps")  # fmt: skip
        for name in names:
            if getattr(self, name) < 0:
                raise ValueError(f"a price cannot be negative ({name})")


#: The quoted us-east-1 prices.
DEFAULT_PRICES = Prices()


def billed_kb(size: int) -> int:
    """On-demand billing size of one record of ``size`` bytes: whole KB, at least one."""
    return max(1, math.ceil(size / KB))


@dataclass(frozen=True, slots=True, kw_only=True)
class MonthlyCost:
    """One stream's estimated monthly bill, if the run's load went on all month."""

    provisioned: float
    """Shard-hours plus PUT payload units."""
    provisioned_shard_hours: float
    provisioned_put_units: float
    on_demand: float
    """Stream-hours plus GB written."""
    on_demand_stream_hours: float
    on_demand_data: float


def monthly_cost(
    *,
    shards: int,
    seconds: float,
    put_payload_units: int,
    billed_kilobytes: int,
    prices: Prices = DEFAULT_PRICES,
) -> MonthlyCost:
    """Scale what a run of ``seconds`` wrote to a month and price it both ways.

    Args:
        shards: shards of the provisioned stream.
        seconds: how long the run wrote for.
        put_payload_units: PUT payload units of the records the run wrote.
        billed_kilobytes: the same records' sizes rounded up to whole KB each.
        prices: the price table.
    """
    scale = SECONDS_PER_MONTH / seconds if seconds > 0 else 0.0
    shard_hours = shards * HOURS_PER_MONTH * prices.shard_hour
    units = put_payload_units * scale / 1e6 * prices.put_units_million
    stream_hours = HOURS_PER_MONTH * prices.on_demand_stream_hour
    data = billed_kilobytes * KB * scale / GB * prices.on_demand_gb
    return MonthlyCost(
        provisioned=shard_hours + units,
        provisioned_shard_hours=shard_hours,
        provisioned_put_units=units,
        on_demand=stream_hours + data,
        on_demand_stream_hours=stream_hours,
        on_demand_data=data,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityCost:
    """One capacity mode's estimated monthly bill, if the run's load went on all month."""

    total: float
    fixed: float
    """Shard-hours (provisioned), stream-hours (on-demand), or the commitment's part above
    what was written (Advantage)."""
    usage: float
    """PUT payload units (provisioned) or GB written (on-demand modes)."""


def capacity_cost(
    mode: str,
    *,
    shards: int,
    seconds: float,
    put_payload_units: int,
    billed_kilobytes: int,
    prices: Prices = DEFAULT_PRICES,
) -> CapacityCost:
    """Price a run of ``seconds`` in capacity mode ``mode``, scaled to a month.

    Args:
        mode: ``provisioned``, ``on-demand`` or ``on-demand-advantage``.
        shards: shards of the provisioned stream (unused on-demand).
        seconds: how long the run wrote for.
        put_payload_units: PUT payload units of the records the run wrote.
        billed_kilobytes: the same records' sizes rounded up to whole KB each.
        prices: the price table.
    """
    cost = monthly_cost(
        shards=shards,
        seconds=seconds,
        put_payload_units=put_payload_units,
        billed_kilobytes=billed_kilobytes,
        prices=prices,
    )
    if mode == "provisioned":
        return CapacityCost(
            total=cost.provisioned,
            fixed=cost.provisioned_shard_hours,
            usage=cost.provisioned_put_units,
        )
    if mode == "on-demand":
        return CapacityCost(
            total=cost.on_demand, fixed=cost.on_demand_stream_hours, usage=cost.on_demand_data
        )
    if mode != "on-demand-advantage":
        raise ValueError(f"unknown capacity mode {mode!r}")
    scale = SECONDS_PER_MONTH / seconds if seconds > 0 else 0.0
    written_gb = billed_kilobytes * KB * scale / GB
    committed_gb = prices.advantage_commitment_mibps * 1024**2 * SECONDS_PER_MONTH / GB
    usage = written_gb * prices.advantage_gb
    floor = max(written_gb, committed_gb) * prices.advantage_gb
    return CapacityCost(total=floor, fixed=floor - usage, usage=usage)
