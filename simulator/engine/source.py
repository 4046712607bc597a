"""What the run loop asks of whatever produces records: a fleet, a replay, a batching stage."""

from __future__ import annotations

from typing import Protocol

from simulator.engine.batching import Record


class RecordSource(Protocol):
    """Records on a schedule (see :class:`simulator.engine.fleet.Fleet`)."""

    @property
    def done(self) -> bool:
        """True once every record has been produced."""
        ...

    @property
    def next_due(self) -> float | None:
        """Simulation time the next record falls due, or None when done."""
        ...

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        """Append every record due by ``now``, at most ``limit``; return how many."""
        ...

    def flush(self, now: float, out: list[Record]) -> None:
        """Append whatever is held back for later (the run is stopping early)."""
        ...

    def leaderboard(self, per_class: int = 5) -> dict[int, list[tuple[str, int, float]]]:
        """The top riders of the current race, per class."""
        ...
