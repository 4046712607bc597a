"""What ``--stream``, ``--shards`` and the AWS options ask of the sink."""

from __future__ import annotations

from dataclasses import dataclass

#: Requests in flight at once against a real stream.
DEFAULT_MAX_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkOptions:
    """Where records go."""

    stream: str | None = None
    """A real stream's name; None for the built-in model."""
    shards: int = 4
    """Shards of the built-in stream, or of a stream created with ``create_stream``."""
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    create_stream: bool = False
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
