"""Simulation time: real, compressed (``--speed``), or virtual (``--fast``).

The same run loop works with each: it asks :meth:`Clock.now` for simulation time (epoch seconds)
and waits with :meth:`Clock.sleep_until`. Only the real clocks touch the system clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Simulation time in epoch seconds."""

    def now(self) -> float:
        """The current simulation time."""
        ...

    def sleep_until(self, deadline: float, wake: threading.Event | None = None) -> None:
        """Wait until simulation time ``deadline``, or until ``wake`` is set."""
        ...


class ScaledClock:
    """Wall-clock time running ``speed`` times faster from ``start`` (speed 1 is real time)."""

    def __init__(
        self,
        start: float | None = None,
        *,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()
        self._start = wall() if start is None else start

    def now(self) -> float:
        """The current simulation time."""
        return self._start + (self._monotonic() - self._origin) * self.speed

    def sleep_until(self, deadline: float, wake: threading.Event | None = None) -> None:
        """Sleep until simulation time ``deadline`` or until ``wake`` is set."""
        delay = (deadline - self.now()) / self.speed
        if delay <= 0:
            return
        if wake is None:
            time.sleep(delay)
        else:
            wake.wait(delay)


class VirtualClock:
    """Time that jumps straight to each deadline: runs as fast as the CPU allows."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        """The current simulation time."""
        return self._now

    def sleep_until(self, deadline: float, wake: threading.Event | None = None) -> None:
        """Advance to ``deadline`` at once."""
        if deadline > self._now:
            self._now = deadline
