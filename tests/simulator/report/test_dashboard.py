import re
from typing import Any

import pytest
from rich.console import Console

from simulator.engine.batching import Record
from simulator.engine.counters import RunStats, ShardSnapshot, StatsSnapshot
from simulator.report.dashboard import render_dashboard
from simulator.report.history import RecentHistory, RunHistory


def _shard(index, records_per_s, bytes_per_s=None):
    return ShardSnapshot(
        shard_id=f"shardId-{index:012d}",
        records=records_per_s * 60,
        bytes=(bytes_per_s or records_per_s * 230) * 60,
        records_per_s=records_per_s,
        bytes_per_s=bytes_per_s if bytes_per_s is not None else records_per_s * 230,
        peak_records_per_s=records_per_s,
    )


def _snapshot(shards, **overrides):
    figures: dict[str, Any] = dict(
        now=1_764_187_290.0,
        elapsed=90.0,
        duration=300.0,
        generated=90_000,
        delivered=87_654,
        throttled=321,
        retries=4_567,
        dropped=12,
        failed_requests=3,
        batches=180,
        in_flight_requests=2,
        buffered=1_234,
        batch_fill=487.0,
        generated_per_s=1_000.0,
        delivered_per_s=976.0,
        latency_p50_ms=258.0,
        latency_p95_ms=731.0,
        latency_p99_ms=1_499.0,
        shards=tuple(shards),
        leaderboard={
            1: [("Ada0", 100, 181.3), ("Bea0", 101, 175.0), ("Cal0", 102, 99.9)],
            2: [("Dev0", 103, 170.2)],
        },
    )
    figures.update(overrides)
    return StatsSnapshot(**figures)


def _render(snapshot, *, strategy="time", stream="built-in", **kwargs):
    console = Console(width=100, color_system=None, record=True)
    console.print(
        render_dashboard(
            snapshot,
            strategy=strategy,
            stream=stream,
            shard_count=len(snapshot.shards),
            **kwargs,
        )
    )
    return console.export_text()


def _line_of(text, needle):
    return next(line for line in text.splitlines() if needle in line)


def test_dashboard_shows_the_counts_rates_and_latency_it_was_given():
    text = _render(_snapshot([_shard(0, 250), _shard(1, 240)]), total_records=300_000)
    for figure in ("90,000 / 300,000", "87,654", "321", "4,567", "buffered 1,234",
                   "in flight 2 req", "rec/req 487", "258 ms", "731 ms", "1,499 ms",
                   "generated/s 1,000", "accepted/s 976", "failed requests 3"):  # fmt: skip
        assert figure in text, figure
    assert "dropped 12" in text


def test_dashboard_shows_strategy_stream_and_time_left():
    text = _render(_snapshot([_shard(0, 250)]), strategy="balanced", stream="rides")
    assert "strategy balanced" in text
    assert "stream rides (1 shard)" in text
    assert "elapsed 1:30 / 5:00" in text
    assert "30%" in text
    assert "remaining 3:30" in text


def _shard_line(text, index):
    return next(line for line in text.splitlines() if line.startswith(f"│ {index} "))


def test_the_hottest_shard_is_marked_against_its_limit():
    text = _render(_snapshot([_shard(0, 250), _shard(1, 1000), _shard(2, 240)]))
    hot = _shard_line(text, 1)
    assert "1,000 (100%)" in hot
    assert "at limit" in hot
    assert "◀" not in _shard_line(text, 0)
    assert "◀" not in _shard_line(text, 2)


def test_a_shard_at_995_records_a_second_is_at_limit_not_hot():
    text = _render(_snapshot([_shard(0, 250), _shard(1, 995)]))
    line = _shard_line(text, 1)
    assert "995 (99%)" in line
    assert "◀ at limit" in line
    assert "hot" not in text


def test_a_shard_near_its_byte_limit_is_hot_even_with_few_records():
    text = _render(_snapshot([_shard(0, 300), _shard(1, 100, bytes_per_s=900 * 1024)]))
    line = _shard_line(text, 1)
    assert "◀ hot" in line
    assert "0.88 (88%)" in line


def test_many_shards_list_the_hottest_first_and_summarise_the_rest():
    shards = [_shard(i, 100 + i) for i in range(20)]
    text = _render(_snapshot(shards), max_shard_rows=5)
    listed = [line.split()[1] for line in text.splitlines() if "█" in line or "░" in line]
    assert listed[1:] == ["19", "18", "17", "16", "15"]  # after the progress bar
    assert "+15 more" in text
    assert "max 114/s" in text


def test_leaderboard_lists_each_class_best_output_first():
    text = _render(_snapshot([_shard(0, 10)]))
    assert "class 1" in text and "class 2" in text
    rows = text[text.index("Leaderboard") :].splitlines()
    assert rows[1].split()[1:9] == ["class", "1", "Ada0", "181.3", "Bea0", "175.0", "Cal0", "99.9"]
    assert rows[2].split()[1:5] == ["class", "2", "Dev0", "170.2"]


def test_dashboard_renders_before_anything_is_sent():
    snapshot = _snapshot(
        [_shard(0, 0)], elapsed=0.0, generated=0, delivered=0, leaderboard={}, batch_fill=0.0
    )
    text = _render(snapshot)
    assert "no riders yet" in text
    assert "◀" not in text


def test_packed_records_show_how_many_messages_they_carried():
    text = _render(_snapshot([_shard(0, 5)], delivered=40), messages_delivered=9_876)
    assert "delivered 40" in text
    assert "ride messages delivered 9,876" in text


BOARD = {c: [(f"Rider{c}{r}", 100 + r, 181.3 - r) for r in range(5)] for c in range(1, 7)}
HISTORY = RecentHistory(
    accepted=tuple(900 + (i * 37) % 200 for i in range(120)),
    throttled=tuple((i * 13) % 7 for i in range(120)),
    p99_ms=tuple(900.0 + (i * 53) % 600 for i in range(120)),
)


def _render_at(width, height, shards, **overrides):
    console = Console(width=width, height=height, color_system=None, record=True)
    snapshot = _snapshot(shards, leaderboard=BOARD, **overrides)
    console.print(
        render_dashboard(
            snapshot,
            strategy="balanced",
            stream="built-in",
            shard_count=len(shards),
            batching="kpl",
            total_records=3_000_000,
            messages_delivered=2_345_678,
            history=HISTORY,
            fit_height=True,
        )  # fmt: skip
    )
    return console.export_text()


BIG = dict(generated=2_700_000, delivered=2_654_321, retries=1_234_567, buffered=49_999)


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40), (200, 50)])
@pytest.mark.parametrize("shard_count", [2, 4, 16, 64])
def test_the_dashboard_fits_the_terminal_and_cuts_no_number(width, height, shard_count):
    shards = [_shard(i, 995 if i == 1 else 200 + i) for i in range(shard_count)]
    text = _render_at(width, height, shards, **BIG)
    lines = text.splitlines()

    assert len(lines) <= height
    assert all(len(line) <= width for line in lines)
    assert "…" not in text
    assert lines[-1].startswith("╰")  # the bottom of the panel is on the screen
    for figure in ("generated 2,700,000 / 3,000,000", "delivered 2,654,321", "retried 1,234,567",
                   "buffered 49,999", "ride messages delivered 2,345,678", "p99 1,499 ms",
                   "throttled 321", "dropped 12", "failed requests 3", "rec/req 487"):  # fmt: skip
        assert figure in text, figure
    busiest = "shardId-000000000001" if width >= 120 else "1"
    row = next(line for line in lines if line.startswith(f"│ {busiest} "))
    assert "995 (99%)" in row and "◀ at limit" in row
    assert f"({shard_count} shards)" in text
    if shard_count > 8:
        assert re.search(r"\+\d+ more +mean [\d,]+/s, max [\d,]+/s", text)


def test_a_wide_terminal_gets_longer_bars_sparklines_and_more_shards():
    shards = [_shard(i, 200 + i) for i in range(32)]
    narrow, wide = _render_at(80, 24, shards), _render_at(200, 50, shards)

    def longest_bar(text):
        return max(len(run) for run in re.findall(r"[█░]+", text))

    assert longest_bar(wide) > 2 * longest_bar(narrow) - 10
    assert wide.count("shardId-") > narrow.count("│ 3")
    assert max(len(run) for run in re.findall(r"[▁▂▃▄▅▆▇█]+", wide)) >= 100


def test_sparklines_show_records_throttles_and_p99_of_the_last_seconds():
    history = RecentHistory(
        accepted=(0, 500, 1000), throttled=(0, 0, 40), p99_ms=(10.0, 20.0, 40.0)
    )
    text = _render(_snapshot([_shard(0, 10)]), history=history)

    assert "▁▅█ 1,000" in _line_of(text, "│ accepted/s ")
    assert "▁▁█ 40" in _line_of(text, "│ throttled/s ")
    assert "▃▅█ 40 ms" in _line_of(text, "│ p99 ")


def _steady_but_bursty(history, stats, seconds):
    """1,000 records/s on one shard, accepted in bursts of 500 and 1,500 on alternate seconds."""
    shard = "shardId-000000000000"
    for second in range(seconds):
        count = 500 if second % 2 else 1500
        now = 1_000.0 + second + 0.5
        stats.record_delivered(
            [Record(b"x" * 100, "k", None, now - 0.2)] * count, [shard] * count, now
        )
        history.sample(stats, now)
        history.sample(stats, now + 0.4)


def test_a_steady_load_accepted_in_bursts_shows_as_steady():
    stats = RunStats(["shardId-000000000000"])
    history = RunHistory()
    _steady_but_bursty(history, stats, 12)
    raw = stats.snapshot(now=1_012.2, start=1_000.0, duration=300, in_flight_requests=0, buffered=0)

    smoothed = history.smoothed(raw)

    assert raw.shards[0].records_per_s in (500, 1500)  # what the last second alone says
    assert 900 <= smoothed.shards[0].records_per_s <= 1100
    assert history.window_seconds == 5
    assert history.recent().accepted[-4:] in ((1500, 500, 1500, 500), (500, 1500, 500, 1500))
    text = _render(smoothed, window_seconds=history.window_seconds)
    assert "Shards: the last 5 s against 1,000 records/s" in text


def test_history_counts_throttles_and_the_p99_of_each_second():
    stats = RunStats(["shardId-000000000000"])
    history = RunHistory()
    shard = "shardId-000000000000"
    history.sample(stats, 10.0)
    stats.record_delivered(
        [Record(b"x", "k", None, 10.4)] * 98 + [Record(b"x", "k", None, 9.5)] * 2,
        [shard] * 100,
        10.5,
    )
    stats.throttled += 7
    history.sample(stats, 11.0)
    stats.record_delivered([Record(b"x", "k", None, 11.49)] * 10, [shard] * 10, 11.5)
    history.sample(stats, 12.0)

    recent = history.recent()

    assert recent.accepted == (100, 10)
    assert recent.throttled == (7, 0)
    assert recent.p99_ms == (1000.0, 10.0)
