"""When to send: whole-second deadlines of the monotonic clock, and how late each send was.

Tick ``n`` is due at ``origin + n`` seconds of ``time.monotonic()``, with ``origin`` a whole
second. Deadlines are computed from the tick number, never from the previous send, so there is no
drift however long the agent runs. A tick missed entirely (the computer was suspended or stalled
for more than a second) is skipped rather than sent late in a burst, so race seconds keep pace
with real time. Pure code: the caller passes the clock's readings.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class TickSchedule:
    """Whole-second deadlines from an origin on the monotonic clock."""

    origin: float
    """Monotonic seconds of tick 0."""
    next_tick: int = 0
    """The tick to send next."""
    missed: int = 0
    """Ticks skipped because their whole second had passed before they could be sent."""

    @classmethod
    def starting_after(cls, now: float) -> TickSchedule:
        """A schedule whose tick 0 is the next whole second of the monotonic clock after ``now``."""
        return cls(origin=float(math.floor(now) + 1))

    @property
    def deadline(self) -> float:
        """Monotonic seconds when :attr:`next_tick` is due."""
        return self.origin + self.next_tick

    def due(self, now: float) -> int | None:
        """The tick to send at ``now``, or ``None`` if it is not yet due.

        Ticks whose whole second has already ended are skipped and counted in :attr:`missed`.
        Call :meth:`advance` once the returned tick is sent.
        """
        if now < self.deadline:
            return None
        latest = math.floor(now - self.origin)
        if latest > self.next_tick:
            self.missed += latest - self.next_tick
            self.next_tick = latest
        return self.next_tick

    def advance(self) -> None:
        """Mark :attr:`next_tick` as sent."""
        self.next_tick += 1


class LatenessWindow:
    """How late the recent sends were, in seconds after their deadlines; memory is bounded.

    Args:
        size: How many recent sends to keep.
    """

    def __init__(self, size: int = 3600) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, lateness: float) -> None:
        """Record one send's lateness."""
        self._values.append(lateness)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, fraction: float) -> float | None:
        """The lateness below which ``fraction`` of the recent sends fall (nearest rank)."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1]

    def summary_ms(self) -> dict[str, float | None]:
        """p50, p99 and max in milliseconds, rounded to 0.01 ms."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "lateness_p50_ms": ms(self.percentile(0.5)),
            "lateness_p99_ms": ms(self.percentile(0.99)),
            "lateness_max_ms": ms(max(self._values, default=None)),
        }
