"""``alleycat compare``: the same workload through each partition-key strategy or batching mode.

The fleet's messages are generated once and replayed (:mod:`simulator.compare.replay`), message for
message, through a fresh run for each strategy or mode: the built-in stream model, the real
producer with its retries and TTL, in virtual time. Each run is measured at the stream
(:class:`MeteredStream`): where each entry was offered, what was accepted, whether each rider's
messages stayed on one shard and in order, and what the accepted records bill.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast

from alleycat_rider.plural import counted
from simulator.compare.costs import DEFAULT_PRICES, MonthlyCost, Prices, monthly_cost
from simulator.compare.replay import (
    WORKLOAD_START,
    Chunk,
    MeteredStream,
    RecordedWorkload,
    ReplayFleet,
    StreamSpec,
    Workload,
    record_workload,
)
from simulator.engine.aggregation import PER_SECOND, BatchingMode, BatchingStage
from simulator.engine.capacity import CapacityMode
from simulator.engine.clock import VirtualClock
from simulator.engine.counters import RunStats
from simulator.engine.fleet import FleetConfig
from simulator.engine.keys import KEYLESS, PartitionKeyStrategy
from simulator.engine.runner import Simulation, SimulationConfig
from simulator.engine.shards import SHARD_RECORDS_PER_SECOND, LocalStream
from simulator.errors import SimulatorError
from simulator.report.timeline import latency_curve


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFigures:
    """What one strategy or mode did with the workload."""

    strategy: str
    batching: str
    messages: int
    """Ride messages delivered."""
    records: int
    """Kinesis records accepted."""
    requests: int
    put_payload_units: int
    billed_kilobytes: int
    shard_records: list[int]
    shard_share: list[float]
    imbalance: float
    """Records on the busiest shard over the mean per shard (1.0 is even)."""
    peak_offered_per_s: list[int]
    """The most entries offered to each shard in one second, retries included."""
    peak_load: float
    """The busiest shard's peak offered rate over its 1,000 records/s limit."""
    throttled: int
    throttled_share: float
    """Throttled entries over all entries sent."""
    retries: int
    dropped: int
    latency_p50_ms: float
    latency_p99_ms: float
    hold_p50_ms: float
    """Client-side wait added by the batching mode (per message)."""
    hold_p99_ms: float
    riders_on_one_shard: float
    """The share of riders whose messages all went to one shard."""
    classes_on_one_shard: float
    """The share of classes whose riders all went to the same single shard."""
    out_of_order: int
    cost: MonthlyCost
    verdict: str = ""
    offered_per_second: tuple[tuple[int, ...], ...] = ()
    """Entries offered to each shard in each second of the workload (the HTML report's heat
    map); not in the JSON."""
    latency_curve: tuple[float, ...] = ()
    """The latency at every whole percentile, 0 to 100 (the HTML report); not in the JSON."""
    stream: str = ""
    """The built-in stream written to: ``provisioned:4``, ``on-demand``, ..."""
    scale_outs: list[tuple[int, int]] = field(default_factory=list)
    """``(second of the run, open shards after)`` of each split of an on-demand stream."""


def run_one(
    recorded: RecordedWorkload,
    strategy: PartitionKeyStrategy,
    mode: BatchingMode = PER_SECOND,
    prices: Prices = DEFAULT_PRICES,
    spec: StreamSpec | None = None,
) -> RunFigures:
    """Replay ``recorded`` with ``strategy`` and ``mode`` on the built-in stream ``spec``
    (default: provisioned, the workload's shards)."""
    w = recorded.workload
    spec = spec or StreamSpec(shards=w.shards)
    if strategy in KEYLESS:  # records without a key need a stream that spreads them itself
        spec = replace(spec, auto=True)
    stream = MeteredStream(spec.open(), w.riders)
    fleet = FleetConfig(
        riders=w.riders,
        classes=w.classes,
        race_seconds=w.race_seconds,
        ramp_seconds=w.ramp_seconds,
    )
    config = SimulationConfig(fleet=fleet, duration=w.duration, strategy=strategy, seed=w.seed)
    # The recorded messages take the place of a fresh fleet: same messages, same schedule.
    simulation = Simulation(
        config,
        stream,
        VirtualClock(WORKLOAD_START),
        batching=mode,
        messages=lambda keyer: ReplayFleet(recorded, keyer),
    )
    stage = simulation.batching
    # Records are short-lived and form no cycles: the cyclic collector only costs time here.
    threshold = gc.get_threshold()
    gc.set_threshold(200_000, 50, 100)
    try:
        result = simulation.run()
    finally:
        gc.set_threshold(*threshold)
    if result.interrupted:
        # Ctrl-C: a strategy cut short cannot be compared with the others, so stop them all.
        raise KeyboardInterrupt
    stats = result.stats
    return _figures(strategy, mode, stats, stream, stage, w, prices)


def _figures(
    strategy: PartitionKeyStrategy,
    mode: BatchingMode,
    stats: RunStats,
    stream: MeteredStream,
    stage: BatchingStage,
    w: Workload,
    prices: Prices,
) -> RunFigures:
    shard_ids = stream.shard_ids  # closed by a split too
    counts = [stats.shards[sid].records if sid in stats.shards else 0 for sid in shard_ids]
    delivered = max(1, stats.delivered)
    mean = sum(counts) / len(counts)
    sent = stats.delivered + stats.throttled + stats.internal_failures
    seen = [s for s in stream.rider_shard if s != -1]
    figures = RunFigures(
        strategy=strategy.value,
        batching=mode.label,
        messages=stats.messages_delivered,
        records=stats.delivered,
        requests=stats.batches,
        put_payload_units=stats.put_payload_units,
        billed_kilobytes=stream.billed_kilobytes,
        shard_records=counts,
        shard_share=[c / delivered for c in counts],
        imbalance=max(counts) / mean if mean else 0.0,
        peak_offered_per_s=stream.offered_peak,
        peak_load=max(stream.offered_peak) / SHARD_RECORDS_PER_SECOND,
        throttled=stats.throttled,
        throttled_share=stats.throttled / sent if sent else 0.0,
        retries=stats.retries,
        dropped=stats.dropped,
        latency_p50_ms=stats.latency.percentile(50),
        latency_p99_ms=stats.latency.percentile(99),
        hold_p50_ms=stage.hold.percentile(50),
        hold_p99_ms=stage.hold.percentile(99),
        riders_on_one_shard=sum(1 for s in seen if s >= 0) / len(seen) if seen else 0.0,
        classes_on_one_shard=_classes_on_one_shard(stream.rider_shard, w.classes),
        out_of_order=stream.out_of_order,
        cost=monthly_cost(
            shards=w.shards,
            seconds=w.duration,
            put_payload_units=stats.put_payload_units,
            billed_kilobytes=stream.billed_kilobytes,
            prices=prices,
        ),
        offered_per_second=stream.offered_per_second(WORKLOAD_START),
        latency_curve=tuple(latency_curve(stats.latency)),
        stream=_stream_label(stream.stream),
        scale_outs=[
            (second - int(WORKLOAD_START), count) for second, count in stream.stream.scale_outs
        ],
    )
    return replace(figures, verdict=verdict(figures))


def _stream_label(stream: LocalStream) -> str:
    if stream.capacity is CapacityMode.PROVISIONED:
        return f"{stream.capacity.value}:{len(stream.router.shards)}"
    return stream.capacity.value


def _classes_on_one_shard(rider_shard: list[int], classes: int) -> float:
    shards_of: dict[int, set[int]] = {}
    for rider, shard in enumerate(rider_shard):
        if shard != -1:
            shards_of.setdefault(rider % classes + 1, set()).add(shard)
    pinned = sum(1 for shards in shards_of.values() if len(shards) == 1 and min(shards) >= 0)
    return pinned / len(shards_of) if shards_of else 0.0


def verdict(f: RunFigures) -> str:
    """One line on what a strategy does to the stream and to per-rider order."""
    if f.dropped:
        return f"loses data: {counted(f.dropped, 'record')} dropped after the TTL"
    if f.throttled_share > 0.01:
        return (
            f"throttles: {f.throttled_share:.0%} of entries rejected, hottest shard offered "
            f"{f.peak_load:.0%} of its limit"
        )
    if f.imbalance > 1.15:
        pinned = "each class pinned to one shard, " if f.classes_on_one_shard == 1 else ""
        return f"uneven: {pinned}the busiest shard takes {f.imbalance:.2f}× the mean"
    if f.riders_on_one_shard < 1:
        return "even, but each rider's messages scatter over shards: no per-rider order"
    if f.out_of_order:
        return (
            f"even, riders pinned to a shard, but {counted(f.out_of_order, 'message')} arrived late"
        )
    return "even, no throttling, each rider's messages in order on one shard"


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """The figures of every run, and how they were obtained."""

    workload: Workload
    runs: list[RunFigures]
    processes: int
    """Processes the runs were spread over."""
    recommendation: str


Job = tuple[PartitionKeyStrategy, BatchingMode, StreamSpec | None]


def usable_cpus() -> int:
    """CPUs this process may run on (at least one): the default number of processes."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def run_all(
    workload: Workload,
    jobs: Sequence[Job],
    *,
    prices: Prices = DEFAULT_PRICES,
    processes: int = 1,
) -> tuple[list[RunFigures], int]:
    """Record ``workload`` once and run each (strategy, mode) job on it.

    With more than one process, worker processes start at once and replay the workload as this
    process records it, chunk by chunk, each taking the next job when it is free.

    Returns:
        The figures in the order of ``jobs``, and the number of processes that ran them.
    """
    processes = max(1, min(processes, len(jobs)))
    if processes == 1 or "fork" not in multiprocessing.get_all_start_methods():
        recorded = record_workload(workload)
        runs = [run_one(recorded, strategy, mode, prices, spec) for strategy, mode, spec in jobs]
        return runs, 1
    context = multiprocessing.get_context("fork")
    todo: multiprocessing.Queue[tuple[int, Job] | None] = context.Queue()
    done: multiprocessing.Queue[tuple[int, RunFigures | str]] = context.Queue()
    for item in enumerate(jobs):
        todo.put(item)
    feeds: list[multiprocessing.Queue[bytes]] = []
    workers = []
    for _ in range(processes):
        todo.put(None)
        feed: multiprocessing.Queue[bytes] = context.Queue()
        worker = context.Process(target=_worker, args=(workload, feed, todo, done, prices))
        worker.start()
        feeds.append(feed)
        workers.append(worker)
    try:

        def send(chunk: Chunk) -> None:
            payload = pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL)  # once for every worker
            for feed in feeds:
                feed.put(payload)

        record_workload(workload, send)
        results: dict[int, RunFigures] = {}
        while len(results) < len(jobs):
            try:
                index, figures = done.get(timeout=1.0)
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers):
                    raise SimulatorError("the comparison's worker processes stopped") from None
                continue
            if isinstance(figures, str):
                raise SimulatorError(f"a comparison run failed: {figures}")
            results[index] = figures
    except KeyboardInterrupt:
        for worker in workers:  # their figures would be of runs cut short
            worker.terminate()
        raise
    finally:
        for feed in feeds:
            feed.cancel_join_thread()  # a worker that stopped early leaves its feed unread
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    return [results[i] for i in range(len(jobs))], processes


def _worker(
    workload: Workload,
    feed: multiprocessing.Queue[bytes],
    todo: multiprocessing.Queue[tuple[int, Job] | None],
    done: multiprocessing.Queue[tuple[int, RunFigures | str]],
    prices: Prices,
) -> None:
    """A worker process: replay the workload as it arrives, for each job it takes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    recorded = RecordedWorkload(workload, lambda: cast(Chunk, pickle.loads(feed.get())))
    while (item := todo.get()) is not None:
        index, (strategy, mode, spec) = item
        try:
            done.put((index, run_one(recorded, strategy, mode, prices, spec)))
        except Exception as exc:  # Reported by the parent as one line, not lost in a child.
            done.put((index, f"{strategy.value}, {mode.label}: {exc!r}"))
            return


def compare_strategies(
    workload: Workload,
    strategies: Sequence[PartitionKeyStrategy],
    *,
    mode: BatchingMode = PER_SECOND,
    prices: Prices = DEFAULT_PRICES,
    processes: int = 1,
    spec: StreamSpec | None = None,
) -> Comparison:
    """Run the same workload through each partition-key strategy (on the stream ``spec``)."""
    jobs: list[Job] = [(strategy, mode, spec) for strategy in strategies]
    runs, used = run_all(workload, jobs, prices=prices, processes=processes)
    return Comparison(
        workload=workload, runs=runs, processes=used, recommendation=recommend_strategy(runs)
    )


def compare_batching(
    workload: Workload,
    strategy: PartitionKeyStrategy,
    modes: Sequence[BatchingMode],
    *,
    prices: Prices = DEFAULT_PRICES,
    processes: int = 1,
    spec: StreamSpec | None = None,
) -> Comparison:
    """Run the same workload, keyed by ``strategy``, through each batching mode (on the
    stream ``spec``)."""
    jobs: list[Job] = [(strategy, mode, spec) for mode in modes]
    runs, used = run_all(workload, jobs, prices=prices, processes=processes)
    return Comparison(
        workload=workload, runs=runs, processes=used, recommendation=recommend_batching(runs)
    )


def _rank(f: RunFigures) -> tuple[bool, bool, bool, bool, float]:
    return (
        f.dropped > 0,
        f.throttled_share > 0.001,
        f.riders_on_one_shard < 1,
        f.imbalance > 1.15,
        f.imbalance,
    )


def _drawback(f: RunFigures, best: RunFigures) -> str:
    if f.dropped:
        return f"drops {counted(f.dropped, 'record')}"
    if f.throttled_share > 0.001:
        return f"throttles {f.throttled_share:.0%} of entries"
    if f.riders_on_one_shard < 1:
        return "scatters each rider over shards"
    if f.imbalance > best.imbalance + 0.005:
        return f"is less even ({f.imbalance:.2f}×)"
    return "does as well here"


def recommend_strategy(runs: Sequence[RunFigures]) -> str:
    """Name the strategy to use, and say in one sentence what is wrong with each other one."""
    if not runs:
        return "nothing was compared"
    best = min(runs, key=_rank)
    order = "every rider on one shard, in order" if best.riders_on_one_shard == 1 else (
        "riders scattered over shards")  # fmt: skip
    line = (
        f"use `{best.strategy}`: busiest shard {best.imbalance:.2f}× the mean, "
        f"{best.throttled_share:.1%} throttled, {best.dropped:,} dropped, {order}."
    )
    others = [f"`{f.strategy}` {_drawback(f, best)}" for f in runs if f is not best]
    return line + (" Against it: " + "; ".join(others) + "." if others else "")


#: A mode costing at most this much more than the cheapest counts as cheap.
NEAR_CHEAPEST = 1.05


def recommend_batching(runs: Sequence[RunFigures]) -> str:
    """Name the quickest mode costing within 5% of the cheapest, and what the others trade."""
    if not runs:
        return "nothing was compared"
    safe = [r for r in runs if not r.dropped] or list(runs)
    cheapest = min(safe, key=lambda r: r.cost.provisioned)
    near = [r for r in safe if r.cost.provisioned <= cheapest.cost.provisioned * NEAR_CHEAPEST]
    best = min(near, key=_wait)
    line = (
        f"use `{best.batching}`: ${best.cost.provisioned:,.2f}/month provisioned "
        f"(${best.cost.on_demand:,.2f} on-demand), {best.put_payload_units:,} PUT payload "
        f"units, messages held up to {best.hold_p99_ms / 1000:.1f} s (p99)"
    )
    if best is not cheapest:
        line += (
            f"; `{cheapest.batching}` saves "
            f"${best.cost.provisioned - cheapest.cost.provisioned:,.2f}/month provisioned and "
            f"${best.cost.on_demand - cheapest.cost.on_demand:,.2f} on-demand by holding "
            f"messages up to {cheapest.hold_p99_ms / 1000:.1f} s"
        )
    for other in safe:
        if other is not best and other is not cheapest:
            line += (
                f"; `{other.batching}` costs ${other.cost.provisioned:,.2f}/month provisioned "
                f"(${other.cost.on_demand:,.2f} on-demand)"
                + (" but delivers soonest" if _wait(other) < _wait(best) else "")
            )
    return line + "."


def _wait(run: RunFigures) -> float:
    return run.hold_p99_ms + run.latency_p99_ms
