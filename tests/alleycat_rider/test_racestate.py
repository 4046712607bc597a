"""The race kept beside the spool: read back whole, or ignored with one report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alleycat_rider.agent.racestate import KeptRace, RaceState, race_state_path

RACE = KeptRace(racer_id=101, class_id=2, race_seconds=300, start_ms=1_764_186_600_000)


class Reports:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, level: str, message: str, **fields: Any) -> None:
        self.lines.append((level, message, fields))


def test_the_race_is_kept_beside_the_spool_and_read_back(tmp_path: Path) -> None:
    path = race_state_path(tmp_path / "state" / "spool.sqlite3")
    assert path == tmp_path / "state" / "spool.race.json"
    state = RaceState(path)
    assert state.recall() is None
    state.keep(RACE)
    assert RaceState(path).recall() == RACE
    assert [p.name for p in path.parent.iterdir()] == ["spool.race.json"]  # no temporary left
    state.forget()
    assert state.recall() is None and not path.exists()


def test_a_race_is_continued_only_while_its_time_is_not_over() -> None:
    assert RACE.elapsed(RACE.start_ms + 21_400) == 21
    assert RACE.elapsed(RACE.start_ms + 299_000) == 299
    assert RACE.elapsed(RACE.start_ms + 300_000) is None  # over: a new race begins
    assert RACE.elapsed(RACE.start_ms - 5_000) is None  # the clock went back


def test_a_damaged_race_file_is_reported_and_a_new_race_begins(tmp_path: Path) -> None:
    reports = Reports()
    path = tmp_path / "spool.race.json"
    for text in ("{not json", '{"racer_id": 1}', '["a list"]', '{"racer_id": "x", "class_id": 1, '
                 '"race_seconds": 300, "start_ms": 5}'):  # fmt: skip
        path.write_text(text)
        assert RaceState(path, report=reports).recall() is None
    assert len(reports.lines) == 4
    assert all(r[:2] == ("warning", "race state ignored: a new race begins") for r in reports.lines)


def test_a_race_that_cannot_be_written_is_reported_once_and_riding_goes_on(
    tmp_path: Path,
) -> None:
    reports = Reports()
    blocked = tmp_path / "file"
    blocked.write_text("")
    state = RaceState(blocked / "spool.race.json", report=reports)  # under a file: unwritable
    state.keep(RACE)
    state.keep(RACE)
    assert [r[1] for r in reports.lines] == [
        "the race cannot be kept: a restart may begin a new race"
    ]
    assert state.recall() is None
