"""One worker process's ride: its users' riders, one producer, one stream, Locust's statistics.

A :class:`WorkerRide` runs the engine's :class:`~simulator.engine.runner.Simulation` (the same
producer, dispatcher and counters as ``alleycat simulate``) in real time, on a thread: under
Locust, whose gevent patches threads and sockets, that thread is a greenlet and boto3's
requests yield to the users and to Locust's heartbeats while they wait. The riders come from
:class:`~simulator.distributed.riders.RiderGroups`, which Locust's users join and leave.

Each PutRecords request is reported to Locust as a request event; throttled and failed entries
and dropped records are their own failure rows, one event each, so no refusal hides inside a
successful request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from simulator.distributed.options import RunOptions
from simulator.distributed.riders import RiderGroups
from simulator.distributed.summary import worker_report
from simulator.engine.batching import Record
from simulator.engine.clock import Clock, ScaledClock
from simulator.engine.dispatch import Completion, Dispatcher
from simulator.engine.fleet import FleetConfig
from simulator.engine.runner import RunResult, Simulation, SimulationConfig
from simulator.engine.shards import THROTTLED
from simulator.engine.sink import StreamSink
from simulator.errors import SimulatorError
from simulator.sinks import make_dispatcher, open_sink

#: Locust's request type and names for what is not a whole request.
ENTRY = "PutRecords entry"
RECORD = "record"
PUT_RECORDS = "PutRecords"


class ThrottledEntry(Exception):
    """An entry the stream refused as over its shard's limit; it is retried."""


class FailedEntry(Exception):
    """An entry the stream refused for another reason (``InternalFailure``); it is retried."""


class DroppedRecord(Exception):
    """A record given up on: not accepted within the record TTL, or the run stopped first."""


class RequestEvent(Protocol):
    """Locust's ``events.request.fire``, as far as it is used here."""

    def __call__(
        self,
        *,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None,
    ) -> None: ...


class LocustDispatcher:
    """Any dispatcher, with each finished request reported as Locust request events.

    Args:
        inner: the dispatcher that sends.
        clock: the run's clock, to time each round trip.
        name: the row's name (the stream).
        fire: Locust's ``events.request.fire``.
    """

    def __init__(self, inner: Dispatcher, clock: Clock, name: str, fire: RequestEvent) -> None:
        self._inner = inner
        self._clock = clock
        self._name = name
        self._fire = fire
        self._sent: dict[int, tuple[float, int]] = {}
        self.wake = inner.wake

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet collected."""
        return self._inner.in_flight

    @property
    def has_capacity(self) -> bool:
        """Whether another request may be sent now."""
        return self._inner.has_capacity

    def submit(self, batch: list[Record], now: float) -> None:
        """Send one request, noting when it left and how big it is."""
        self._sent[id(batch)] = (self._clock.now(), sum([r.size for r in batch]))
        self._inner.submit(batch, now)

    def completions(self) -> list[Completion]:
        """The requests finished since the last call, each reported to Locust."""
        done = self._inner.completions()
        for completion in done:
            self._report(completion)
        return done

    def close(self) -> None:
        """Stop sending; wait for requests in flight."""
        self._inner.close()

    def _report(self, done: Completion) -> None:
        sent_at, size = self._sent.pop(id(done.batch), (done.finished_at, 0))
        took = max(0.0, (done.finished_at - sent_at) * 1000)
        fire = self._fire
        fire(
            request_type=PUT_RECORDS,
            name=self._name,
            response_time=took,
            response_length=size,
            exception=done.error,
        )
        if done.outcome is None or not done.outcome.failed_record_count:
            return
        for code in done.outcome.error_codes:
            if code is None:
                continue
            error: Exception = ThrottledEntry(code) if code == THROTTLED else FailedEntry(code)
            name = "throttled" if code == THROTTLED else "failed"
            fire(
                request_type=ENTRY, name=name, response_time=took, response_length=0,
                exception=error,
            )  # fmt: skip


class WorkerRide:
    """The riders of one worker process, written into one stream by one producer.

    Args:
        options: the run's settings.
        worker_index: Locust's index of this worker (0 for a single process).
        fire: Locust's ``events.request.fire``.
        sink_opener: opens the stream (the engine's :func:`~simulator.sinks.open_sink`).
    """

    def __init__(
        self,
        options: RunOptions,
        worker_index: int,
        fire: RequestEvent,
        sink_opener: Callable[[Any], StreamSink] = open_sink,
    ) -> None:
        self.options = options
        self.worker_index = worker_index
        self._fire = fire
        self.error: SimulatorError | None = None
        self.clock = ScaledClock()
        self._thread: threading.Thread | None = None
        self._result: RunResult | None = None
        self._dropped_reported = 0
        self._finished = threading.Event()
        self._finish_lock = threading.Lock()
        try:
            self.sink: StreamSink | None = sink_opener(options.sink)
        except SimulatorError as exc:
            self.sink = None
            self.error = exc
            self.groups = RiderGroups(options.groups, worker_index, ())
            self.simulation: Simulation | None = None
            return
        stream = self.sink.describe()
        self.groups = RiderGroups(options.groups, worker_index, stream.shards)
        dispatcher = LocustDispatcher(
            make_dispatcher(self.sink, self.clock, options.sink), self.clock, stream.name, fire
        )
        config = SimulationConfig(
            fleet=FleetConfig(riders=1, classes=options.groups.classes),
            duration=1,
            strategy=options.groups.strategy,
            producer=options.producer,
            seed=options.groups.seed,
        )
        self.simulation = Simulation(
            config,
            self.sink,
            self.clock,
            dispatcher=dispatcher,
            batching=options.batching,
            messages=lambda _keyer: self.groups,
        )

    def start(self) -> None:
        """Start the run loop; it rides until :meth:`finish`."""
        if self.simulation is None:
            return
        self._thread = threading.Thread(target=self._run, name="alleycat-ride", daemon=True)
        self._thread.start()

    def join(self) -> int:
        """A user starts riding; returns its group's number (for :meth:`leave`).

        Raises:
            ValueError: this worker's racer ids are used up.
        """
        return self.groups.join(self.clock.now())

    def leave(self, group: int) -> None:
        """A user stopped riding."""
        self.groups.leave(group)

    def report(self) -> dict[str, Any]:
        """This worker's figures so far (final once :meth:`finish` has returned)."""
        simulation = self.simulation
        if simulation is None:
            from simulator.engine.counters import RunStats

            stats, pending = RunStats([]), 0
        else:
            stats, pending = simulation.stats, simulation.producer.pending
        report = worker_report(
            stats,
            worker_index=self.worker_index,
            pending=pending,
            riders=self.groups.peak_riders,
            final=self._finished.is_set(),
        )
        report["stream"] = None if self.simulation is None else self.simulation.stream.name
        report["error"] = None if self.error is None else str(self.error)
        return report

    def finish(self, timeout: float | None = None) -> dict[str, Any]:
        """Stop the riders, deliver what is buffered (within the TTL), and report.

        Safe to call more than once and from several greenlets: the first call drains.
        """
        with self._finish_lock:
            if not self._finished.is_set():
                self.groups.close()
                if self._thread is not None:
                    self._thread.join(timeout)
                if self.sink is not None and (self._thread is None or not self._thread.is_alive()):
                    self.sink.close()
                self._finished.set()
        return self.report()

    def _run(self) -> None:
        assert self.simulation is not None
        result = self.simulation.run(on_pass=self._report_drops)
        self._report_drops(self.simulation)
        self._result = result
        if result.error is not None and self.error is None:
            self.error = result.error

    def _report_drops(self, simulation: Simulation) -> None:
        dropped = simulation.stats.dropped
        for _ in range(dropped - self._dropped_reported):
            self._fire(
                request_type=RECORD, name="dropped", response_time=0.0, response_length=0,
                exception=DroppedRecord("not accepted within the record TTL"),
            )  # fmt: skip
        self._dropped_reported = dropped
