"""Whole-second deadlines on the monotonic clock: no drift, missed seconds skipped."""

from __future__ import annotations

import pytest

from alleycat_rider.agent.schedule import LatenessWindow, TickSchedule


def test_tick_zero_is_the_next_whole_second() -> None:
    assert TickSchedule.starting_after(1234.56).origin == 1235.0
    assert TickSchedule.starting_after(1235.0).origin == 1236.0


def test_deadlines_do_not_drift_however_late_each_send_is() -> None:
    schedule = TickSchedule(origin=100.0)
    sent_at: list[float] = []
    now = 99.5
    while len(sent_at) < 3600:
        tick = schedule.due(now)
        if tick is None:
            now = schedule.deadline
            continue
        sent_at.append(now)
        schedule.advance()
        now += 0.004  # every send takes a little while
    assert schedule.deadline == 3700.0
    assert max(sent - (100.0 + i) for i, sent in enumerate(sent_at)) == pytest.approx(0.0)
    assert schedule.missed == 0


def test_a_tick_is_not_due_before_its_deadline() -> None:
    schedule = TickSchedule(origin=10.0)
    assert schedule.due(9.999) is None
    assert schedule.due(10.0) == 0


def test_seconds_missed_entirely_are_skipped_and_counted() -> None:
    schedule = TickSchedule(origin=10.0)
    assert schedule.due(10.0) == 0
    schedule.advance()
    assert schedule.due(13.5) == 3
    assert schedule.missed == 2
    schedule.advance()
    assert schedule.deadline == 14.0


def test_a_late_send_within_its_second_is_not_a_miss() -> None:
    schedule = TickSchedule(origin=10.0)
    assert schedule.due(10.9) == 0
    assert schedule.missed == 0


def test_lateness_percentiles_use_the_recent_window_only() -> None:
    window = LatenessWindow(size=100)
    for _ in range(50):
        window.add(1.0)  # pushed out of the window below
    for i in range(100):
        window.add(i / 1000)
    assert len(window) == 100
    assert window.percentile(0.5) == pytest.approx(0.049)
    assert window.percentile(0.99) == pytest.approx(0.098)
    assert window.summary_ms() == {
        "lateness_p50_ms": 49.0,
        "lateness_p99_ms": 98.0,
        "lateness_max_ms": 99.0,
    }


def test_an_empty_lateness_window_has_no_percentiles() -> None:
    assert LatenessWindow().summary_ms()["lateness_p99_ms"] is None
