"""What a stream would cost a month, from what a run wrote.

The prices are the widely quoted us-east-1 figures (see ``/work/shared/reference/kinesis.md``);
they are not fetched from AWS. Check them against https://aws.amazon.com/kinesis/data-streams/pricing/
before quoting a cost, and override them (``alleycat compare --price-...``) for another region.

- Provisioned: shard-hours, plus PUT payload units (each started 25 KB of a record).
- On-demand: data written, each record rounded up to the next KB, plus stream-hours.

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

    def __post_init__(self) -> None:
        for name in ("shard_hour", "put_units_million", "on_demand_stream_hour", "on_demand_gb"):
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
