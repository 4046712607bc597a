"""Which race, and which second of it, each tick of the agent's loop rides in.

Races follow each other without a pause from the first tick. The first tick continues the race
kept beside the spool (:mod:`alleycat_rider.agent.racestate`) if it is this rider's and not over,
where the wall clock is now; else a race begins at that tick. Each race is kept once its first
message is sent, and forgotten once its ``final`` is: an agent killed and started again
continues its race rather than beginning another under the same id.
"""

from __future__ import annotations

from alleycat_rider.agent.display import Reporter
from alleycat_rider.agent.racestate import KeptRace, RaceState
from alleycat_rider.config import RiderConfig
from alleycat_rider.core.message import RacePosition, race_id, race_position


class RaceClock:
    """The races one agent rides.

    Args:
        config: The validated configuration (racer, class, race length).
        race_state: Where the race being ridden is kept, to continue it after a restart.
        reporter: Where a continued race is told.
    """

    def __init__(self, config: RiderConfig, race_state: RaceState | None, reporter: Reporter):
        self.config = config
        self._race_state = race_state
        self._reporter = reporter
        self._start_ms: int | None = None
        # Ticks of the race continued at the start, before this agent's tick 0.
        self._tick_offset = 0
        self._kept_start_ms: int | None = None
        self._to_keep: KeptRace | None = None

    def position(self, tick: int, wall_ms: int) -> RacePosition:
        """Where the message of ``tick``, stamped ``wall_ms``, falls; a race it begins is kept
        once it is sent (:meth:`sent`)."""
        race_seconds = self.config.race_seconds
        if self._start_ms is None:
            self._start_ms = self._first_race_start(tick, wall_ms)
        ticks = tick + self._tick_offset
        start_ms = self._start_ms + ticks // race_seconds * race_seconds * 1000
        if start_ms != self._kept_start_ms and self._race_state is not None:
            self._to_keep = self._kept_race(start_ms)  # written once the message is sent
        return race_position(self._start_ms, ticks, race_seconds)

    def sent(self) -> None:
        """The message last placed is sent: keep the race it began, if it began one."""
        kept = self._to_keep
        if kept is not None and self._race_state is not None:
            self._race_state.keep(kept)
            self._kept_start_ms = kept.start_ms
            self._to_keep = None

    def final_position(self, next_tick: int) -> RacePosition | None:
        """Where a ``final`` message sent at ``next_tick`` falls; ``None`` if nothing was ridden."""
        if self._start_ms is None:
            return None
        ticks = next_tick + self._tick_offset
        return race_position(self._start_ms, ticks, self.config.race_seconds)

    def forget(self) -> None:
        """The race's final is sent: a restart begins a new race."""
        if self._race_state is not None:
            self._race_state.forget()

    def _kept_race(self, start_ms: int) -> KeptRace:
        config = self.config
        return KeptRace(
            racer_id=config.racer_id,
            class_id=config.class_id,
            race_seconds=config.race_seconds,
            start_ms=start_ms,
        )

    def _first_race_start(self, tick: int, wall_ms: int) -> int:
        """The start of the race ``tick`` rides in: the kept race if it is this rider's and not
        over (continued where the clock is), else a race beginning at this tick."""
        kept = None if self._race_state is None else self._race_state.recall()
        elapsed = None
        if kept is not None and kept == self._kept_race(kept.start_ms):
            elapsed = kept.elapsed(wall_ms)
        if kept is None or elapsed is None:
            return wall_ms - tick * 1000
        self._tick_offset = elapsed - tick
        self._kept_start_ms = kept.start_ms
        self._reporter.event(
            "info", "race continued", race_id=race_id(kept.start_ms), second=elapsed + 1
        )
        return kept.start_ms
