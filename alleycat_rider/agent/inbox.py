"""What wakes the agent's loop: the link's events, a stop asked for, the quick TLS check's answer.

SDK threads and signal handlers put events here and never wait for the loop (a lock held for an
instant at most; ``SimpleQueue.put`` is safe in a signal handler). Completions are put aside, to
be handled at the loop's next wake-up, unless a backlog waits for room in the window: waking
the loop costs more CPU than anything else it does in a second.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from alleycat_rider.mqtt import ConnectionFailed, LinkEvent, PublishDone


@dataclass(frozen=True, slots=True)
class StopRequested:
    """A signal asked the agent to stop."""

    signum: int


@dataclass(frozen=True, slots=True)
class TlsChecked:
    """The quick TLS check is done."""

    refusal: ConnectionFailed | None
    """Which side refused the other, or ``None`` if the handshake did not tell."""


#: Anything that wakes the loop.
Event = LinkEvent | StopRequested | TlsChecked


class Inbox:
    """The events waiting for the agent's loop."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._deferred: deque[PublishDone] = deque()
        self._eager = True
        self._deferral = threading.Lock()

    def put(self, event: Event) -> None:
        """Wake the loop with ``event`` (safe from signal handlers and other threads)."""
        self._events.put(event)

    def sink(self, event: LinkEvent) -> None:
        """Take an event from an SDK thread; never blocks."""
        with self._deferral:  # held for an instant, never while handling anything
            if not self._eager and isinstance(event, PublishDone):
                self._deferred.append(event)
                return
        self._events.put(event)

    def get(self, timeout: float) -> Event | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def deferred(self, eager: Callable[[], bool]) -> PublishDone | None:
        """The oldest completion put aside; when none is left, ``None``, and whether the next
        ones wake the loop is decided by ``eager()``."""
        with self._deferral:
            if not self._deferred:
                self._eager = eager()
                return None
            return self._deferred.popleft()
