from typing import Any

from rich.console import Console

from simulator.report.dashboard import render_dashboard
from simulator.report.stats import ShardSnapshot, StatsSnapshot


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
                   "in flight 2 req", "487 rec/req", "258 ms", "731 ms", "1,499 ms",
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


def test_the_hottest_shard_is_marked_against_its_limit():
    text = _render(_snapshot([_shard(0, 250), _shard(1, 1000), _shard(2, 240)]))
    hot = _line_of(text, "000000000001")
    assert "1,000 (100%)" in hot
    assert "at limit" in hot
    assert "◀" not in _line_of(text, "000000000000")
    assert "◀" not in _line_of(text, "000000000002")


def test_a_shard_near_its_byte_limit_is_hot_even_with_few_records():
    text = _render(_snapshot([_shard(0, 300), _shard(1, 100, bytes_per_s=900 * 1024)]))
    line = _line_of(text, "000000000001")
    assert "◀ hot" in line
    assert "0.88 (88%)" in line


def test_many_shards_list_the_hottest_first_and_summarise_the_rest():
    shards = [_shard(i, 100 + i) for i in range(20)]
    text = _render(_snapshot(shards), max_shard_rows=5)
    listed = [line for line in text.splitlines() if "0000000000" in line]
    assert [line.split()[1] for line in listed] == [
        "000000000019", "000000000018", "000000000017", "000000000016",
    ]  # fmt: skip
    assert "+16 more" in text
    assert "max 115/s" in text


def test_leaderboard_lists_each_class_best_output_first():
    text = _render(_snapshot([_shard(0, 10)]))
    assert "class 1" in text and "class 2" in text
    rows = text[text.index("Leaderboard") :].splitlines()
    assert "Ada0" in rows[2] and "181.3" in rows[2] and "Dev0" in rows[2]
    assert "Bea0" in rows[3] and "Cal0" in rows[4]


def test_dashboard_renders_before_anything_is_sent():
    snapshot = _snapshot(
        [_shard(0, 0)], elapsed=0.0, generated=0, delivered=0, leaderboard={}, batch_fill=0.0
    )
    text = _render(snapshot)
    assert "no riders yet" in text
    assert "◀" not in text


def test_packed_records_show_how_many_messages_they_carried():
    text = _render(_snapshot([_shard(0, 5)], delivered=40), messages_delivered=9_876)
    assert "delivered 40 (9,876 msgs)" in text
