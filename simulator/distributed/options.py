"""Our options as Locust custom arguments, and the run settings read back from them.

They are added through Locust's ``init_command_line_parser`` event, so they show in its web UI,
are read from ``locust.conf`` and ``LOCUST_*`` variables, and reach every worker with each spawn
message (``alleycat locust --help`` prints them before Locust's own help, which leaves them
out). Names that Locust uses itself are avoided (its ``--profile`` is not the AWS profile: ours is
``--aws-profile``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from alleycat_rider.bounds import Bounds
from simulator.distributed.riders import GroupSettings
from simulator.engine.aggregation import BatchingMode, parse_batching
from simulator.engine.batching import KINESIS_MAX_RECORDS, BatchLimits
from simulator.engine.fleet import FleetConfig
from simulator.engine.keys import KEYLESS, PartitionKeyStrategy
from simulator.engine.producer import ProducerConfig
from simulator.sinks.options import DEFAULT_MAX_IN_FLIGHT, SinkOptions


def add_arguments(parser: Any) -> None:
    """Add the simulator's options to Locust's argument parser (its ``add_argument``)."""
    group = parser.add_argument_group("Alleycat", "the fleet of virtual riders (alleycat locust)")
    add = group.add_argument
    add(
        "--stream",
        default=None,
        help="Kinesis stream to write to (default: a built-in model per worker)",
    )
    add(
        "--partition-key",
        default="random",
        choices=[s.value for s in PartitionKeyStrategy if s not in KEYLESS],
        help="How records are keyed",
    )
    add("--shards", type=int, default=4, help="Shards of the built-in model or of --create-stream")
    add(
        "--create-stream",
        action="store_true",
        default=False,
        help="Create --stream with --shards shards if missing",
    )
    add("--riders-per-user", type=int, default=1, help="Riders each Locust user brings")
    add("--classes", type=int, default=6, help="Deal riders over class ids 1..N")
    add("--race-seconds", type=int, default=300, help="Race length; races follow each other")
    add(
        "--phase-spread",
        type=int,
        default=1000,
        help="Spread riders' send times over this many ms of each second",
    )
    add("--seed", type=int, default=None, help="Make each rider ride the same way every run")
    add("--region", default=None, help="AWS region of the stream (or AWS_REGION)")
    add("--aws-profile", default=None, help="AWS profile to use (or AWS_PROFILE)")
    add("--endpoint-url", default=None, help="A Kinesis-compatible endpoint (or AWS_ENDPOINT_URL)")
    add(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="PutRecords requests in flight at once, per worker",
    )
    add("--flush-interval", type=float, default=1.0, help="Send a partly filled batch after this")
    add(
        "--record-ttl",
        type=float,
        default=30.0,
        help="Drop (and count) a record not accepted within this many seconds",
    )
    add("--max-records", type=int, default=KINESIS_MAX_RECORDS, help="Records per PutRecords")
    add("--max-buffered", type=int, default=50_000, help="Records a worker holds at most")
    add("--batching", default="per-second", help="per-second, buffered:SECONDS or kpl")
    add(
        "--summary-json",
        default=None,
        metavar="FILE",
        help="Write the run's summary as JSON to FILE (- for stdout)",
    )
    add(
        "--summary-html",
        default=None,
        metavar="FILE",
        help="Write the run's summary as one HTML page with charts to FILE (needs plotly)",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """Everything a worker needs to ride, read from Locust's parsed options."""

    sink: SinkOptions
    groups: GroupSettings
    producer: ProducerConfig
    batching: BatchingMode
    summary_json: str | None
    summary_html: str | None = None

    @classmethod
    def from_parsed(cls, options: argparse.Namespace | Any) -> RunOptions:
        """Read and check the options.

        Raises:
            ValueError: an option is out of range (the message says which).
        """
        o = options
        for name in ("shards", "classes", "race_seconds", "max_in_flight", "max_buffered"):
            if getattr(o, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        # Finite and in range whichever way they came (the command line, the web UI's form).
        flush_interval = _checked("--flush-interval", o.flush_interval, Bounds(minimum=0))
        record_ttl = _checked("--record-ttl", o.record_ttl, Bounds(minimum=0, min_open=True))
        endpoint = o.endpoint_url
        if endpoint is not None and "://" not in endpoint:
            raise ValueError(f"--endpoint-url {endpoint!r} needs a scheme, e.g. http://{endpoint}")
        limits = BatchLimits(max_records=o.max_records)
        # The fleet's own checks (classes 1..6, phase spread 0..1000 ms), before any rider rides.
        FleetConfig(classes=o.classes, race_seconds=o.race_seconds, phase_spread_ms=o.phase_spread)
        return cls(
            sink=SinkOptions(
                stream=o.stream,
                shards=o.shards,
                region=o.region,
                profile=o.aws_profile,
                endpoint_url=endpoint,
                create_stream=o.create_stream,
                max_in_flight=o.max_in_flight,
            ),
            groups=GroupSettings(
                riders_per_user=o.riders_per_user,
                classes=o.classes,
                race_seconds=o.race_seconds,
                phase_spread_ms=o.phase_spread,
                strategy=PartitionKeyStrategy(o.partition_key),
                seed=o.seed,
            ),
            producer=ProducerConfig(
                limits=limits,
                flush_interval=flush_interval,
                record_ttl=record_ttl,
                max_buffered=max(o.max_buffered, limits.max_records),
            ),
            batching=parse_batching(o.batching),
            summary_json=o.summary_json,
            summary_html=getattr(o, "summary_html", None),
        )


def _checked(flag: str, value: Any, bounds: Bounds) -> float:
    try:
        return bounds.check(value)
    except ValueError as exc:
        raise ValueError(f"{flag} {exc}") from None
