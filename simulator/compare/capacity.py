"""``alleycat compare --capacity``: one workload through each capacity mode, with its cost.

Each mode gets the chosen partition-key strategy, and each on-demand mode ``auto`` as well
(service-managed distribution exists only there). A row says how many shards the stream used
over time, what throttled and was dropped, the latency, whether each rider's records stayed in
order (on one shard, or on the shards split from it), and the monthly cost of that mode
(:func:`simulator.compare.costs.capacity_cost`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from simulator.compare.costs import DEFAULT_PRICES, CapacityCost, Prices, capacity_cost
from simulator.compare.replay import StreamSpec, Workload
from simulator.compare.runs import Job, RunFigures, run_all
from simulator.engine.aggregation import PER_SECOND
from simulator.engine.capacity import DEFAULT_ON_DEMAND_POLICY, CapacityMode, OnDemandPolicy
from simulator.engine.keys import KEYLESS, PartitionKeyStrategy
from simulator.engine.shards import SHARD_BYTES_PER_SECOND


def parse_capacities(text: str, default_shards: int) -> list[StreamSpec]:
    """``provisioned:4,on-demand,on-demand-advantage`` as stream specs.

    Raises:
        ValueError: An unknown mode, or a shard count that is not a whole number from 1.
    """
    specs: list[StreamSpec] = []
    names = ", ".join(m.value for m in CapacityMode)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, count = item.partition(":")
        try:
            mode = CapacityMode(name)
        except ValueError:
            raise ValueError(f"{item!r}: give a comma list of {names} (provisioned:N)") from None
        shards = default_shards
        if count:
            if mode is not CapacityMode.PROVISIONED or not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"{item!r}: only provisioned takes a shard count, e.g. provisioned:4"
                )
            shards = int(count)
        specs.append(StreamSpec(mode=mode, shards=shards))
    if not specs:
        raise ValueError(f"{text!r}: give a comma list of {names}")
    return list(dict.fromkeys(specs))


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityRun:
    """One capacity mode and key, run."""

    spec: StreamSpec
    run: RunFigures
    cost: CapacityCost

    @property
    def order_kept(self) -> bool:
        """Each rider's records on one shard, or on the shards split from it."""
        return self.run.riders_on_one_shard == 1

    @property
    def shards_over_time(self) -> str:
        """``4``, or ``4→6→8`` when the stream split."""
        spec = self.spec
        first = (
            spec.policy.starting_shards(SHARD_BYTES_PER_SECOND)
            if spec.mode.on_demand
            else spec.shards
        )
        return "→".join([str(first), *[str(count) for _, count in self.run.scale_outs]])


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityComparison:
    """Every mode's runs, and how they were obtained."""

    workload: Workload
    runs: list[CapacityRun]
    processes: int
    recommendation: str
    policy: OnDemandPolicy


def capacity_jobs(
    specs: Sequence[StreamSpec], strategy: PartitionKeyStrategy, policy: OnDemandPolicy
) -> list[tuple[StreamSpec, PartitionKeyStrategy]]:
    """Each mode with ``strategy``, and each on-demand mode with ``auto`` too.

    Raises:
        ValueError: ``strategy`` sends no key and a mode is provisioned.
    """
    jobs: list[tuple[StreamSpec, PartitionKeyStrategy]] = []
    for spec in specs:
        if spec.mode.on_demand:
            warm = policy.warm_throughput_mibps
            if spec.mode is not CapacityMode.ON_DEMAND_ADVANTAGE:
                warm = 0.0
            spec = replace(spec, policy=replace(policy, warm_throughput_mibps=warm))
        if strategy in KEYLESS and not spec.mode.on_demand:
            raise ValueError(
                f"--partition-key {strategy.value} cannot run on {spec.label}: AWS refuses "
                "service-managed distribution on provisioned streams (on-demand modes get an "
                "auto row anyway: choose the key to compare with it)"
            )
        jobs.append((spec, strategy))
        auto = PartitionKeyStrategy.AUTO
        if spec.mode.on_demand and strategy is not auto:
            jobs.append((spec, auto))
    return jobs


def compare_capacities(
    workload: Workload,
    specs: Sequence[StreamSpec],
    strategy: PartitionKeyStrategy,
    *,
    policy: OnDemandPolicy = DEFAULT_ON_DEMAND_POLICY,
    prices: Prices = DEFAULT_PRICES,
    processes: int = 1,
) -> CapacityComparison:
    """Run the same workload through each capacity mode (see :func:`capacity_jobs`)."""
    pairs = capacity_jobs(specs, strategy, policy)
    jobs: list[Job] = [(key, PER_SECOND, spec) for spec, key in pairs]
    figures, used = run_all(workload, jobs, prices=prices, processes=processes)
    runs = [
        CapacityRun(
            spec=spec,
            run=run,
            cost=capacity_cost(
                spec.mode.value,
                shards=spec.shards,
                seconds=workload.duration,
                put_payload_units=run.put_payload_units,
                billed_kilobytes=run.billed_kilobytes,
                prices=prices,
            ),
        )
        for (spec, _), run in zip(pairs, figures, strict=True)
    ]
    return CapacityComparison(
        workload=workload,
        runs=runs,
        processes=used,
        recommendation=recommend_capacity(runs),
        policy=policy,
    )


def _rank(run: CapacityRun) -> tuple[bool, bool, float]:
    return (run.run.dropped > 0, run.run.throttled_share > 0.001, run.cost.total)


def _name(run: CapacityRun) -> str:
    return f"`{run.spec.label}` with `{run.run.strategy}`"


def _drawback(run: CapacityRun, best: CapacityRun) -> str:
    f = run.run
    if f.dropped:
        return f"drops {f.dropped:,} records"
    if f.throttled_share > 0.001:
        when = f" before its split at {f.scale_outs[0][0]:,} s" if f.scale_outs else ""
        return f"throttles {f.throttled_share:.1%} of entries at the race start{when}"
    extra = run.cost.total - best.cost.total
    if extra > 0.005:
        return f"costs ${extra:,.2f}/month more"
    return "costs the same"


def recommend_capacity(runs: Sequence[CapacityRun]) -> str:
    """Name the mode and key to use and why (cost, order, throttling at the race start)."""
    if not runs:
        return "nothing was compared"
    best = min(runs, key=_rank)
    f = best.run
    order = "each rider's records in order" if best.order_kept else "no per-rider order"
    line = (
        f"use {_name(best)}: ${best.cost.total:,.2f}/month, {f.throttled_share:.1%} "
        f"throttled, {f.dropped:,} dropped, {order}"
    )
    if not best.order_kept:
        ordered = [r for r in runs if r.order_kept and not _rank(r)[0] and not _rank(r)[1]]
        if ordered:
            keep = min(ordered, key=_rank)
            line += f"; for per-rider order, {_name(keep)} at ${keep.cost.total:,.2f}/month"
    others = [f"{_name(r)} {_drawback(r, best)}" for r in runs if r is not best]
    return line + (". Against the others: " + "; ".join(others) + "." if others else ".")
