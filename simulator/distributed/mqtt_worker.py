"""One worker process's riders over MQTT (``alleycat locust --via mqtt``): the fleet of
``simulate --via mqtt`` (:class:`~simulator.mqtt.fleet.MqttFleet`), grown as Locust's users join.

Locust's workers are gevent processes, with threads and sockets patched into greenlets; the
fleet's connections live on an asyncio (uvloop) event loop, which must not share the gevent hub's
thread (each would block the other). So the fleet runs in a native OS thread, started with the
unpatched ``_thread.start_new_thread`` (``gevent.monkey.get_original``): its loop is libuv's
and its sockets the ``_socket`` module's, never gevent's. The two sides meet only through
thread-safe hand-overs:

- users join and leave through :class:`MqttRiderGroups` under a native lock (held for
  microseconds, by the loop's timer or by a user's greenlet); a user that stops leaves its
  riders' numbers on a ``collections.deque`` for the loop's timer, which sees them off (what
  they hold sent, then a DISCONNECT: :meth:`MqttFleet.leave`);
- the fleet appends each CONNECT, PUBLISH and drop to a ``collections.deque``, which a greenlet
  empties every :data:`FIRE_EVERY` seconds into Locust's request events (fired on the hub's
  thread, as Locust requires);
- the loop's timer writes a fresh report every second, which the greenlet side reads whole.

Should the fleet's thread stop on a defect, its sockets are closed (what was in flight stays
counted as in flight), and the greenlet says so: one line in the log, a failure row
(``MQTT fleet``), and ``on_failure``, which ends the test (see :mod:`.hooks`).
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, cast

from simulator.distributed.options import RunOptions
from simulator.distributed.riders import RIDERS_PER_WORKER, RiderGroups
from simulator.distributed.worker import RequestEvent
from simulator.engine.batching import Record
from simulator.engine.fleet import Fleet, FleetConfig
from simulator.engine.keys import Keyer, KeyList
from simulator.mqtt.fleet import DRAIN_SECONDS, MqttFleet

#: Seconds between hand-overs of the fleet's outcomes to Locust's request events.
FIRE_EVERY = 0.5
#: Seconds a worker waits at the end beyond the fleet's drain, for its goodbyes.
FINISH_GRACE = 10.0
#: Locust's request type of the failure row of a fleet that stopped on a defect.
FLEET = "MQTT fleet"

logger = logging.getLogger("alleycat")


def _original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent patched it (itself, without gevent)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - Locust brings gevent
        import importlib

        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)


class FleetFailed(Exception):
    """What Locust shows in its failure rows: the reason an attempt or a publish failed."""


class MqttRiderGroups(RiderGroups):
    """Locust users' groups of riders as one record source whose records name the fleet's rider:
    group ``g``'s ``i``-th rider is the fleet's rider ``g * riders_per_user + i``.

    ``join``, ``leave``, ``close`` (from users' greenlets) and ``emit_until`` (from the loop's
    timer) hold one native lock.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = _original("_thread", "allocate_lock")()
        self.joined = 0
        """Groups that ever joined: the fleet has riders for all of them."""

    def _keyer(self, config: FleetConfig, rng: random.Random) -> Keyer:
        """No partition keys: over MQTT the IoT rule keys the records, not the riders."""
        return _no_keys

    def join(self, now: float) -> int:
        with self.lock:
            group = super().join(now)
            self.joined = group + 1
            return group

    def leave(self, group: int) -> None:
        with self.lock:
            super().leave(group)

    def close(self) -> None:
        with self.lock:
            super().close()

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        with self.lock:
            per_group = self.settings.riders_per_user
            count = 0
            due = self._due
            while count < limit and self.next_due is not None and due[0][0] <= now:
                _, group = heapq.heappop(due)
                fleet = self._riding[group]
                first = len(out)
                count += fleet.emit_until(now, out, limit - count)
                for record in out[first:]:
                    record.rider += group * per_group
                self._push(group, fleet)
            return count


def _no_keys(riders: Sequence[int], timestamps_ms: Sequence[int]) -> KeyList:
    return [_NO_KEY] * len(riders)


_NO_KEY = ("", None)


class MqttWorkerRide:
    """The riders of one worker process, each on its own MQTT connection.

    Args:
        options: the run's settings (``options.mqtt`` set).
        worker_index: Locust's index of this worker (0 for a single process).
        fire: Locust's ``events.request.fire``.
        workers: how many workers share the connect rate (more may be said later).
        on_failure: called (on the gevent side) with the one line that says why, if the
            fleet's thread stops on a defect.
    """

    def __init__(
        self,
        options: RunOptions,
        worker_index: int,
        fire: RequestEvent,
        workers: int = 1,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        assert options.mqtt is not None
        self.options = options
        self.worker_index = worker_index
        self._fire = fire
        self._on_failure = on_failure
        self._failure_said = False
        self.error: str | None = None
        self.groups = MqttRiderGroups(options.groups, worker_index, ())
        # Racer ids dealt by worker index, as the Kinesis path deals them.
        fleet_options = replace(options.mqtt, first_rider=worker_index * RIDERS_PER_WORKER)
        # The fleet's riders come from the groups, as users join (its one first rider unused).
        self.fleet = MqttFleet(cast(Fleet, _GroupsAsFleet(self.groups)), fleet_options)
        self.fleet.riders.clear()
        self.fleet.peak_riders = 0
        self.fleet.report = deque()
        self.fleet.on_tick = self._on_tick
        self.share(workers)
        self._done = _original("_thread", "allocate_lock")()
        self._latest: dict[str, Any] = self._make_report(final=False)
        self._next_report = 0.0
        self._finished = False
        self._firing: Any = None
        self._left: deque[int] = deque()
        """Groups whose user stopped, for the loop's timer to see off."""
        self._ending = False
        """The test is stopping: its users stop with it, and the fleet's drain sees to all."""

    def share(self, workers: int) -> None:
        """The connect rate is the whole test's: this worker opens its share of it."""
        assert self.options.mqtt is not None
        self.fleet.connect_rate = self.options.mqtt.connect_rate / max(1, workers)

    def start(self) -> None:
        """Start the fleet's thread (native) and the greenlet that reports to Locust."""
        import gevent

        self._done.acquire()
        _original("_thread", "start_new_thread")(self._run, ())
        self._firing = gevent.spawn(self._fire_loop)

    def join(self) -> int:
        """A user starts riding; returns its group's number (for :meth:`leave`).

        Raises:
            ValueError: this worker's racer ids are used up.
        """
        return self.groups.join(time.time())

    def leave(self, group: int) -> None:
        """A user stopped: its riders make no more messages, send what they hold and
        disconnect (see :meth:`MqttFleet.leave`)."""
        self.groups.leave(group)
        if not self._ending:
            self._left.append(group)

    def ending(self) -> None:
        """The test is stopping (Locust's ``test_stopping``): the users that stop from now on
        stop with it, and :meth:`finish` delivers what their riders hold (not counted as
        ``left``)."""
        self._ending = True

    def report(self) -> dict[str, Any]:
        """This worker's figures as of the last second (final once :meth:`finish` returned)."""
        return self._latest

    def finish(self, timeout: float | None = None) -> dict[str, Any]:
        """Stop the riders, wait for what is in flight (the fleet's drain), and report."""
        import gevent

        if not self._finished:
            self._finished = True
            self.groups.close()
            self.fleet.stopped.set()
            deadline = time.monotonic() + (timeout or DRAIN_SECONDS + FINISH_GRACE)
            ended = False
            while time.monotonic() < deadline:
                if self._done.acquire(False):
                    ended = True
                    break
                gevent.sleep(0.1)
            if self._firing is not None:
                self._firing.kill()
            self._fire_pending()
            self._latest = self._make_report(final=ended)
            if self.error is not None:
                self._say_failure(end_test=False)  # it ends already
        return self._latest

    # The fleet's thread.

    def _run(self) -> None:
        try:
            self.fleet.run()
        except BaseException as exc:  # a defect: said by the greenlet, and in the summary
            self.error = f"the MQTT fleet stopped on a defect: {exc!r}".replace("\n", " ")
        finally:
            self._done.release()

    def _on_tick(self) -> None:
        per_group = self.options.groups.riders_per_user
        wanted = self.groups.joined * per_group
        if wanted > len(self.fleet.riders):
            self.fleet.grow(wanted)
        now = time.monotonic()
        left = self._left
        while left:
            group = left.popleft()
            self.fleet.leave(range(group * per_group, (group + 1) * per_group), now)
        if now >= self._next_report:
            self._next_report = now + 1.0
            self._latest = self._make_report(final=False)

    def _make_report(self, *, final: bool) -> dict[str, Any]:
        fleet = self.fleet
        return {
            "via": "mqtt",
            "worker_index": self.worker_index,
            "final": final,
            "pending": fleet.in_flight + fleet.held,
            "riders": fleet.peak_riders,
            "summary": fleet.summary(),
            "latency": sorted(fleet.latency.counts.items()),
            "connect_latency": sorted(fleet.connect_latency.counts.items()),
            "error": self.error,
            "stream": None,
        }

    # The gevent side.

    def _fire_loop(self) -> None:
        import gevent

        while True:
            gevent.sleep(FIRE_EVERY)
            self._fire_pending()
            if self.error is not None and not self._failure_said:
                self._latest = self._make_report(final=False)  # the fleet's last figures
                self._say_failure()

    def _say_failure(self, *, end_test: bool = True) -> None:
        """The fleet stopped on a defect: one line, a failure row, and ``on_failure``."""
        if self._failure_said or self.error is None:
            return
        self._failure_said = True
        logger.error("alleycat: %s", self.error)
        self._fire(
            request_type=FLEET, name="stopped", response_time=0.0, response_length=0,
            exception=FleetFailed(self.error),
        )  # fmt: skip
        if end_test and self._on_failure is not None:
            self._on_failure(self.error)

    def _fire_pending(self) -> None:
        report = self.fleet.report
        assert report is not None
        fire: Callable[..., None] = self._fire
        while report:
            kind, name, took, error = report.popleft()
            fire(
                request_type=kind, name=name, response_time=took, response_length=0,
                exception=None if error is None else FleetFailed(error),
            )  # fmt: skip


class _GroupsAsFleet:
    """The groups where :class:`MqttFleet` wants a :class:`~simulator.engine.fleet.Fleet`."""

    def __init__(self, groups: MqttRiderGroups) -> None:
        self._groups = groups
        self.config = FleetConfig(riders=1)
        self.duration = 0

    @property
    def done(self) -> bool:
        return self._groups.done

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        return self._groups.emit_until(now, out, limit)
