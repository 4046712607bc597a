"""The race the agent is riding, kept beside its spool so that a restarted agent continues it.

Race ids are 5-minute windows (the original's ``floor(epoch_ms / 300000)``), so an agent killed
and started again within a window would begin a second race under the same id at second 1. The
agent keeps its race's start instead: written when a race begins, removed once the race's
``final`` message is sent at a stop. Started again with a race kept for the same rider, class
and race length whose time is not over, the agent continues that race: the same race id, the
second the clock has reached, and the ``final`` message at its end.

The file is small JSON, written atomically (a temporary file, fsync, rename): after a crash or a
power cut it holds the previous race or the new one, never half of either. A file that cannot
be read or written is reported and the agent rides on: it only costs a new race.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

#: Where the race state reports (``Reporter.event``'s signature): level, message, fields.
RaceReport = Callable[..., None]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeptRace:
    """A race begun: whose, how long, and when it started."""

    racer_id: int
    class_id: int
    race_seconds: int
    start_ms: int
    """Epoch milliseconds of the race's second 1."""

    def elapsed(self, wall_ms: int) -> int | None:
        """Whole seconds of this race gone at ``wall_ms``, while the race is not over; else
        None (it ended, or the clock is before its start)."""
        elapsed = round((wall_ms - self.start_ms) / 1000)
        return elapsed if 0 < elapsed < self.race_seconds else None


def race_state_path(spool: Path) -> Path:
    """The race state kept beside ``spool``: ``spool.sqlite3`` -> ``spool.race.json``."""
    return spool.with_name(f"{spool.stem}.race.json")


def _ignore(level: str, message: str, **fields: Any) -> None:
    """Report nowhere."""


class RaceState:
    """The kept race of one agent, in ``path``.

    Args:
        path: The JSON file (see :func:`race_state_path`).
        report: Where a file that cannot be read or written is reported, once each.
    """

    def __init__(self, path: Path, *, report: RaceReport | None = None) -> None:
        self.path = path
        self._report: RaceReport = report if report is not None else _ignore
        self._failing = False

    def recall(self) -> KeptRace | None:
        """The race kept, or None if there is none (or it cannot be read: reported)."""
        try:
            data = json.loads(self.path.read_text())
            return KeptRace(**{f.name: int(data[f.name]) for f in fields(KeptRace)})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self._report(
                "warning", "race state ignored: a new race begins", path=str(self.path),
                error=str(exc) or type(exc).__name__,
            )  # fmt: skip
            return None

    def keep(self, race: KeptRace) -> None:
        """Keep ``race`` as the one being ridden (atomically)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w") as file:
                json.dump(asdict(race), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            self._failed("kept", exc)
            return
        self._failing = False

    def forget(self) -> None:
        """The race is over (its final message sent): a restart begins a new one."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            self._failed("forgotten", exc)

    def _failed(self, what: str, exc: OSError) -> None:
        if not self._failing:
            self._failing = True
            self._report(
                "warning", f"the race cannot be {what}: a restart may begin a new race",
                path=str(self.path), error=exc.strerror or str(exc),
            )  # fmt: skip
