"""What ``--stream``, ``--shards``, ``--capacity`` and the AWS options ask of the sink."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.engine.batching import MIB
from simulator.engine.capacity import DEFAULT_ON_DEMAND_POLICY, CapacityMode, OnDemandPolicy
from simulator.engine.sink import RecordDistribution

#: Requests in flight at once against a real stream.
DEFAULT_MAX_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkOptions:
    """Where records go."""

    stream: str | None = None
    """A real stream's name; None for the built-in model."""
    shards: int = 4
    """Shards of the built-in stream, or of a stream created with ``create_stream``
    (provisioned)."""
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    create_stream: bool = False
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    capacity: CapacityMode = CapacityMode.PROVISIONED
    """The built-in stream's mode, or a created stream's."""
    distribution: RecordDistribution = RecordDistribution.USER_PARTITION_KEY
    """AUTO when records go without a key: the stream must spread them itself."""
    policy: OnDemandPolicy = DEFAULT_ON_DEMAND_POLICY
    """How the built-in on-demand stream grows; its warm throughput is also a created
    stream's (On-demand Advantage)."""
    max_record_size_kib: int | None = None
    """A created stream's ``MaxRecordSizeInKiB`` (None: the service's default, 1 MiB)."""
    max_record_bytes: int = MIB
    """The largest record the run may send: an existing stream must take it."""
