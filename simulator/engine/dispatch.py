"""Sending batches: inline for the built-in stream, or several requests in flight at once.

A dispatcher takes batches from the run loop, calls the sink, and hands back completions. With a
real stream the round trip, not the CPU, limits throughput, so :class:`ThreadedDispatcher` keeps
up to ``max_in_flight`` PutRecords requests going at once.
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from simulator.engine.batching import Record
from simulator.engine.clock import Clock
from simulator.engine.sink import PutRecordsOutcome, StreamSink
from simulator.errors import FatalSinkError, SinkError

#: Seconds between GIL hand-overs while worker threads send requests (Python's default is 5 ms).
GIL_SWITCH_INTERVAL = 0.001


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished request: its outcome, or the whole-request error it failed with."""

    batch: list[Record]
    outcome: PutRecordsOutcome | None
    error: SinkError | None
    finished_at: float
    """Simulation time the response arrived."""
    sent_at: float | None = None
    """Simulation time the request was given to the sink: the second whose budget the built-in
    stream spent on it (its records are counted in that second, not the one it returned in)."""


class Dispatcher(Protocol):
    """Runs PutRecords requests for the run loop."""

    wake: threading.Event
    """Set whenever a completion is ready."""

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet collected."""
        ...

    @property
    def has_capacity(self) -> bool:
        """Whether another request may be sent now."""
        ...

    def submit(self, batch: list[Record], now: float) -> None:
        """Send one request."""
        ...

    def completions(self) -> list[Completion]:
        """The requests finished since the last call."""
        ...

    def close(self) -> None:
        """Stop sending; wait for requests in flight."""
        ...


def _call(sink: StreamSink, batch: list[Record], now: float, clock: Clock) -> Completion:
    try:
        outcome = sink.put_records(batch, now)
    except SinkError as exc:
        return Completion(batch, None, exc, clock.now(), now)
    return Completion(batch, outcome, None, clock.now(), now)


class InlineDispatcher:
    """Calls the sink at once, in the caller's thread: one request at a time."""

    def __init__(self, sink: StreamSink, clock: Clock) -> None:
        self._sink = sink
        self._clock = clock
        self._done: list[Completion] = []
        self.wake = threading.Event()

    @property
    def in_flight(self) -> int:
        """Requests finished but not yet collected."""
        return len(self._done)

    @property
    def has_capacity(self) -> bool:
        """Always: a request finishes before ``submit`` returns."""
        return True

    def submit(self, batch: list[Record], now: float) -> None:
        """Send one request and keep its completion."""
        self._done.append(_call(self._sink, batch, now, self._clock))
        self.wake.set()

    def completions(self) -> list[Completion]:
        """The requests finished since the last call."""
        self.wake.clear()
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Nothing runs in the background."""


class ThreadedDispatcher:
    """Keeps up to ``max_in_flight`` requests going on worker threads."""

    def __init__(self, sink: StreamSink, clock: Clock, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("at least one request must be allowed in flight")
        self._sink = sink
        self._clock = clock
        self._max = max_in_flight
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="put-records")
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._in_flight = 0
        self.wake = threading.Event()
        # While the run loop makes records it holds the GIL; a worker whose response has
        # arrived waits for the next switch. Python's default 5 ms is a tenth of a request's
        # round trip to a local server: switch every millisecond while requests are in flight.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, GIL_SWITCH_INTERVAL))

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet collected."""
        return self._in_flight

    @property
    def has_capacity(self) -> bool:
        """Whether fewer than ``max_in_flight`` requests are outstanding."""
        return self._in_flight < self._max

    def submit(self, batch: list[Record], now: float) -> None:
        """Start one request on a worker thread."""
        self._in_flight += 1
        self._pool.submit(self._run, batch, now)

    def _run(self, batch: list[Record], now: float) -> None:
        try:
            done = _call(self._sink, batch, now, self._clock)
        except Exception as exc:
            # A bug, not a stream failure: lost in the pool, it would leave the request in
            # flight forever and the run waiting for it. Stop the run and say what happened.
            traceback.print_exc()
            error = FatalSinkError(f"unexpected error while sending a batch: {exc!r}")
            done = Completion(batch, None, error, self._clock.now())
        self._done.put(done)
        self.wake.set()

    def completions(self) -> list[Completion]:
        """The requests finished since the last call."""
        self.wake.clear()
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._in_flight -= len(done)
        return done

    def close(self) -> None:
        """Wait for the requests in flight and stop the workers."""
        self._pool.shutdown(wait=True)
        sys.setswitchinterval(self._switch_interval)
