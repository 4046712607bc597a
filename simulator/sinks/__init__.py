"""Choosing the stream to write to: the built-in shard model, or a real Kinesis stream."""

from __future__ import annotations

from simulator.engine.clock import Clock
from simulator.engine.dispatch import Dispatcher, InlineDispatcher, ThreadedDispatcher
from simulator.engine.shards import LocalStream
from simulator.engine.sink import StreamSink
from simulator.sinks.options import DEFAULT_MAX_IN_FLIGHT, SinkOptions

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "SinkOptions", "make_dispatcher", "open_sink"]


def open_sink(options: SinkOptions) -> StreamSink:
    """The sink ``options`` name; raises a :class:`~simulator.errors.SimulatorError` if unusable."""
    if options.stream is None:
        return LocalStream(
            options.shards,
            capacity=options.capacity,
            policy=options.policy,
            distribution=options.distribution,
        )
    from simulator.sinks.kinesis import KinesisSink  # boto3 is loaded only for real streams

    sink: StreamSink = KinesisSink.open(options)
    return sink


def make_dispatcher(sink: StreamSink, clock: Clock, options: SinkOptions) -> Dispatcher:
    """Inline for the built-in stream; ``max_in_flight`` worker threads for a real one."""
    if isinstance(sink, LocalStream):
        return InlineDispatcher(sink, clock)
    return ThreadedDispatcher(sink, clock, options.max_in_flight)
