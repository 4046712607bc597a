"""``alleycat compare --ingest``: the two ways rides reach the stream, on the same workload.

- ``sdk``: the simulator's producer writes PutRecords batches straight to the stream, with the
  chosen partition key, retries of throttled entries and the record TTL
  (:func:`simulator.compare.runs.run_one`).
- ``iot-rule``: bikes publish over MQTT and IoT Core's rule puts **one record per message**, at
  the moment it handles the message (publish time plus ``delay_ms``), keyed by the rule's
  template (``${timestamp()}`` by default: bikes publishing in the same millisecond share a
  key, hence a shard). The rules engine retries nothing into the stream: a throttled record goes
  to the error action, and is lost unless one is configured.

Both run in virtual time on the built-in stream model (MD5 routing, 1,000 records/s and 1 MiB/s
per shard) and are priced by the month: the stream for both, and for ``iot-rule`` IoT Core on
top (:class:`IotPrices`): connection-minutes (every rider connected all month), messages (each
publish metered in 5 KB steps), rules triggered and actions executed (each in 5 KB steps too).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace

from alleycat_rider.plural import counted
from simulator.backend.template import KeyTemplate, MessageContext
from simulator.compare.costs import (
    DEFAULT_PRICES,
    SECONDS_PER_MONTH,
    MonthlyCost,
    Prices,
    monthly_cost,
)
from simulator.compare.replay import WORKLOAD_START, MeteredStream, RecordedWorkload
from simulator.compare.runs import RunFigures, _classes_on_one_shard, run_one
from simulator.engine.batching import PUT_PAYLOAD_UNIT_BYTES, Record
from simulator.engine.fleet import FIRST_RACER_ID
from simulator.engine.keys import PartitionKeyStrategy
from simulator.engine.shards import SHARD_RECORDS_PER_SECOND, LocalStream
from simulator.report.timeline import PERCENTILES

INGEST_PATHS = ("sdk", "iot-rule")
#: IoT Core meters messages, rules and actions in steps of 5 KB.
IOT_METERING_BYTES = 5 * 1024
#: Minutes in a 730-hour month.
MINUTES_PER_MONTH = SECONDS_PER_MONTH // 60
#: The topic riders publish on; its length counts towards the metered size.
RIDE_TOPIC = "alleycat-publish"


@dataclass(frozen=True, slots=True, kw_only=True)
class IotPrices:
    """AWS IoT Core prices in US dollars (see the README for where each figure comes from)."""

    connection_minutes_million: float = 0.08
    messages_million: float = 1.00
    """The first billion messages of a month."""
    messages_million_next_4b: float = 0.80
    messages_million_over_5b: float = 0.70
    rules_million: float = 0.15
    actions_million: float = 0.15

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise ValueError(f"a price cannot be negative ({name})")


DEFAULT_IOT_PRICES = IotPrices()


@dataclass(frozen=True, slots=True, kw_only=True)
class IotCost:
    """IoT Core's monthly bill for the ``iot-rule`` path, if the run's load went on all month."""

    connectivity: float
    messaging: float
    rules: float
    actions: float

    @property
    def total(self) -> float:
        return self.connectivity + self.messaging + self.rules + self.actions


NO_IOT_COST = IotCost(connectivity=0.0, messaging=0.0, rules=0.0, actions=0.0)


def iot_steps(size: int) -> int:
    """How many 5 KB steps IoT Core meters ``size`` bytes as (at least one)."""
    return max(1, math.ceil(size / IOT_METERING_BYTES))


def messaging_cost(messages_per_month: float, prices: IotPrices) -> float:
    """Messages a month at the tiered price: the first billion, the next four, the rest."""
    first = min(messages_per_month, 1e9)
    next_four = min(max(messages_per_month - 1e9, 0.0), 4e9)
    rest = max(messages_per_month - 5e9, 0.0)
    return (
        first * prices.messages_million
        + next_four * prices.messages_million_next_4b
        + rest * prices.messages_million_over_5b
    ) / 1e6


def iot_cost(
    *, riders: int, seconds: float, metered_steps: int, prices: IotPrices = DEFAULT_IOT_PRICES
) -> IotCost:
    """IoT Core's bill for ``riders`` connected all month, publishing what the run published.

    ``metered_steps`` is the run's messages in 5 KB steps; each also triggers the rule once and
    executes its one action once, metered the same way.
    """
    scale = SECONDS_PER_MONTH / seconds if seconds > 0 else 0.0
    per_month = metered_steps * scale
    return IotCost(
        connectivity=riders * MINUTES_PER_MONTH / 1e6 * prices.connection_minutes_million,
        messaging=messaging_cost(per_month, prices),
        rules=per_month / 1e6 * prices.rules_million,
        actions=per_month / 1e6 * prices.actions_million,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestFigures:
    """One path's figures: what reached the stream, what was lost, and what it costs."""

    path: str
    key: str
    """The partition-key strategy (sdk) or template (iot-rule)."""
    run: RunFigures
    offered: int
    """The workload's messages: the same for every path. ``run.messages`` of them reached the
    stream and ``run.dropped`` did not, ``lost`` plus ``to_error_action``."""
    lost: int
    """Messages that reached neither the stream nor an error action: dropped after the TTL
    (sdk), or throttled with no error action configured (iot-rule)."""
    to_error_action: int
    """Throttled messages the rule's error action took (iot-rule with ``--error-action``)."""
    iot: IotCost

    @property
    def monthly_total(self) -> float:
        """The provisioned stream plus IoT Core."""
        return self.run.cost.provisioned + self.iot.total


def run_sdk(
    recorded: RecordedWorkload, strategy: PartitionKeyStrategy, prices: Prices = DEFAULT_PRICES
) -> IngestFigures:
    """Today's producer on the workload."""
    figures = run_one(recorded, strategy, prices=prices)
    return IngestFigures(
        path="sdk",
        key=strategy.value,
        run=figures,
        offered=recorded.total,
        lost=figures.dropped,
        to_error_action=0,
        iot=NO_IOT_COST,
    )


def run_iot_rule(
    recorded: RecordedWorkload,
    *,
    template: str = "${timestamp()}",
    delay_ms: int = 20,
    error_action: bool = False,
    prices: Prices = DEFAULT_PRICES,
    iot_prices: IotPrices = DEFAULT_IOT_PRICES,
) -> IngestFigures:
    """IoT Core's rule on the workload: one PutRecord per message, no retries."""
    w = recorded.workload
    while recorded.fetch():
        pass
    key = KeyTemplate.parse(template)
    reads_fields = any(
        name not in ("timestamp()", "newuuid()", "topic()", "clientid()")
        for name in _substitutions(template)
    )
    stream = MeteredStream(LocalStream(w.shards), w.riders)
    delivered = throttled = units = steps = 0
    records_in_second: list[Record] = []
    second = None
    shard_ids = [s.shard_id for s in stream.describe().shards]
    accepted = dict.fromkeys(shard_ids, 0)

    def flush(now: float) -> None:
        # One request per second of handling times: the shard model budgets by the second, so
        # this throttles exactly as one PutRecord per message would.
        nonlocal delivered, throttled
        outcome = stream.put_records(records_in_second, now)
        for shard_id in outcome.shard_ids:
            if shard_id is not None:
                accepted[shard_id] += 1
        throttled += outcome.failed_record_count
        delivered += len(records_in_second) - outcome.failed_record_count
        records_in_second.clear()

    topic_bytes = len(RIDE_TOPIC.encode())
    for stamp_ms, rider, data in zip(
        recorded.timestamps_ms, recorded.riders, recorded.data, strict=True
    ):
        handled_ms = stamp_ms + delay_ms
        if second is not None and handled_ms // 1000 != second:
            flush(second)
        second = handled_ms // 1000
        racer = FIRST_RACER_ID + rider
        fields = _decode(data) if reads_fields else {}
        context = MessageContext(RIDE_TOPIC, f"alleycat-{racer}", handled_ms, fields)
        partition_key = key.key(context)
        record = Record(data, partition_key, None, stamp_ms / 1000, rider)
        records_in_second.append(record)
        units += math.ceil(record.size / PUT_PAYLOAD_UNIT_BYTES)
        steps += iot_steps(len(data) + topic_bytes)
    if second is not None:
        flush(second)
    offered = stream.offered_peak
    counts = [accepted[shard_id] for shard_id in shard_ids]
    mean = sum(counts) / len(counts)
    sent = delivered + throttled
    seen = [s for s in stream.rider_shard if s != -1]
    cost: MonthlyCost = monthly_cost(
        shards=w.shards,
        seconds=w.duration,
        put_payload_units=units,
        billed_kilobytes=stream.billed_kilobytes,
        prices=prices,
    )
    run = RunFigures(
        strategy=template,
        batching="PutRecord",
        messages=delivered,
        records=delivered,
        requests=sent,
        put_payload_units=units,
        billed_kilobytes=stream.billed_kilobytes,
        shard_records=counts,
        shard_share=[c / max(1, delivered) for c in counts],
        imbalance=max(counts) / mean if mean else 0.0,
        peak_offered_per_s=offered,
        peak_load=max(offered) / SHARD_RECORDS_PER_SECOND,
        throttled=throttled,
        throttled_share=throttled / sent if sent else 0.0,
        retries=0,
        dropped=throttled,
        # Every record is put once, the rule's delay after its publish: no batching, no retries.
        latency_p50_ms=float(delay_ms) if delivered else 0.0,
        latency_p99_ms=float(delay_ms) if delivered else 0.0,
        hold_p50_ms=0.0,
        hold_p99_ms=0.0,
        riders_on_one_shard=sum(1 for s in seen if s >= 0) / len(seen) if seen else 0.0,
        classes_on_one_shard=_classes_on_one_shard(stream.rider_shard, w.classes),
        out_of_order=stream.out_of_order,
        cost=cost,
        offered_per_second=stream.offered_per_second(WORKLOAD_START),
        latency_curve=(float(delay_ms),) * len(PERCENTILES) if delivered else (),
    )
    return IngestFigures(
        path="iot-rule",
        key=template,
        run=replace(run, verdict=_verdict(run, error_action)),
        offered=recorded.total,
        lost=0 if error_action else throttled,
        to_error_action=throttled if error_action else 0,
        iot=iot_cost(riders=w.riders, seconds=w.duration, metered_steps=steps, prices=iot_prices),
    )


def _substitutions(template: str) -> list[str]:
    return [m.strip() for m in re.findall(r"\$\{([^}]*)\}", template)]


def _decode(data: bytes) -> dict[str, object]:
    obj = json.loads(data)
    return obj if isinstance(obj, dict) else {}


def _verdict(f: RunFigures, error_action: bool) -> str:
    if f.throttled:
        where = "to the error action" if error_action else "lost (no error action)"
        return (
            f"throttles: {counted(f.throttled, 'record')} ({f.throttled_share:.1%}) {where}, never "
            f"retried; hottest shard offered {f.peak_load:.0%} of its limit"
        )
    if f.imbalance > 1.15:
        return f"uneven: the busiest shard takes {f.imbalance:.2f}× the mean"
    return "even, nothing throttled"


def recommend_ingest(runs: list[IngestFigures]) -> str:
    """Which path fits which need: latency, loss under throttling, cost."""
    by_path = {f.path: f for f in runs}
    sdk, rule = by_path.get("sdk"), by_path.get("iot-rule")
    if sdk is None or rule is None:
        return "compare both paths (--ingest sdk,iot-rule) for a recommendation"
    parts = []
    if rule.lost > sdk.lost:
        parts.append(
            f"the IoT rule loses {rule.lost:,} throttled messages the SDK path delivers with "
            "retries: add shards or a key that spreads load (and an error action)"
        )
    elif rule.to_error_action:
        parts.append(
            f"the IoT rule sends {rule.to_error_action:,} throttled messages to the error action"
        )
    else:
        parts.append("neither path throttles at this load")
    parts.append(
        f"the rule adds {rule.run.latency_p50_ms:,.0f} ms, the SDK's batching "
        f"{sdk.run.latency_p50_ms:,.0f} ms at p50"
    )
    cheaper = "sdk" if sdk.monthly_total <= rule.monthly_total else "iot-rule"
    parts.append(
        f"{cheaper} costs less (${min(sdk.monthly_total, rule.monthly_total):,.2f} against "
        f"${max(sdk.monthly_total, rule.monthly_total):,.2f} a month); IoT Core is what real "
        "bikes need for mutual TLS, per-device policies and standings sent back"
    )
    return "; ".join(parts) + "."
