"""Choosing the stream to write to: the built-in shard model, or a real Kinesis stream."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.engine.clock import Clock
from simulator.engine.dispatch import Dispatcher, InlineDispatcher, ThreadedDispatcher
from simulator.engine.shards import LocalStream
from simulator.engine.sink import StreamSink

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


def open_sink(options: SinkOptions) -> StreamSink:
    """The sink ``options`` name; raises a :class:`~simulator.errors.SimulatorError` if unusable."""
    if options.stream is None:
        return LocalStream(options.shards)
    from simulator.sinks.kinesis import KinesisSink  # boto3 is loaded only for real streams

    sink: StreamSink = KinesisSink.open(options)
    return sink


def make_dispatcher(sink: StreamSink, clock: Clock, options: SinkOptions) -> Dispatcher:
    """Inline for the built-in stream; ``max_in_flight`` worker threads for a real one."""
    if isinstance(sink, LocalStream):
        return InlineDispatcher(sink, clock)
    return ThreadedDispatcher(sink, clock, options.max_in_flight)
