"""The rule's bookkeeping: a record per message, acknowledged only when safe, nothing lost."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from simulator.backend.rule import ErrorAction, IotRule
from simulator.backend.template import KeyTemplate
from simulator.engine.batching import Record
from simulator.engine.sink import PutRecordsOutcome
from simulator.errors import FatalSinkError, RetryableSinkError

THROTTLED = "ProvisionedThroughputExceededException"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stream:
    """Accepts ``budget`` entries per request and throttles the rest, or fails whole requests."""

    def __init__(self, budget: int = 10_000, failures: Sequence[Exception] = ()) -> None:
        self.budget = budget
        self.failures = list(failures)
        self.records: list[Record] = []
        self.requests: list[int] = []

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        self.requests.append(len(records))
        if self.failures:
            raise self.failures.pop(0)
        codes = [None if i < self.budget else THROTTLED for i in range(len(records))]
        self.records.extend(r for r, c in zip(records, codes, strict=True) if c is None)
        return PutRecordsOutcome(
            failed_record_count=sum(1 for c in codes if c),
            shard_ids=["shardId-000000000000" if c is None else None for c in codes],
            sequence_numbers=[str(i) if c is None else None for i, c in enumerate(codes)],
            error_codes=codes,
        )


def message(racer: int, second: int = 1) -> bytes:
    return json.dumps({"racerId": racer, "second": second, "uuid": f"u-{racer}-{second}"}).encode()


_open: list[IotRule] = []


@pytest.fixture(autouse=True)
def close_rules() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def make_rule(stream: Stream, tmp_path: Path, clock: Clock, **kwargs: Any) -> IotRule:
    error_action = ErrorAction(tmp_path / "errors.jsonl", rule_name="alleycatIngest", stream="s")
    rule = IotRule(stream, stream="s", error_action=error_action, monotonic=clock, **kwargs)
    _open.append(rule)
    return rule


def test_each_message_is_one_record_and_acked_only_once_written(tmp_path: Path) -> None:
    stream, clock = Stream(), Clock()
    acks: list[int] = []
    rule = make_rule(stream, tmp_path, clock, key=KeyTemplate.parse("${racerId}"))
    for racer in (101, 102, 103):
        rule.offer("alleycat-publish", message(racer), functools.partial(acks.append, racer))
    assert acks == [] and rule.counts.pending == 3
    rule.step(timeout=0)
    assert [r.partition_key for r in stream.records] == ["101", "102", "103"]
    assert [json.loads(r.data) for r in stream.records] == [
        json.loads(message(r)) for r in (101, 102, 103)
    ]
    assert acks == [101, 102, 103]
    assert rule.counts.to_dict() | {} == {
        "received": 3, "written": 3, "retried": 0, "error_action": 0, "pending": 0,
        "requests": 1, "failed_requests": 0,
    }  # fmt: skip


def test_the_default_key_is_the_time_the_rule_took_the_message(tmp_path: Path) -> None:
    stream = Stream()
    error_action = ErrorAction(None, rule_name="r", stream="s")
    rule = IotRule(stream, stream="s", error_action=error_action, wall_ms=lambda: 1234567)
    rule.offer("alleycat-publish", message(1), None)
    rule.step(timeout=0)
    assert stream.records[0].partition_key == "1234567"


def test_throttled_entries_are_retried_until_written(tmp_path: Path) -> None:
    stream, clock = Stream(budget=2), Clock()
    acks: list[int] = []
    rule = make_rule(stream, tmp_path, clock)
    for racer in range(5):
        rule.offer("alleycat-publish", message(racer), functools.partial(acks.append, racer))
    for _ in range(10):
        rule.step(timeout=0)
        clock.now += 1.0
    assert sorted(acks) == [0, 1, 2, 3, 4]
    assert rule.counts.written == 5 and rule.counts.error_action == 0
    assert rule.counts.retried == 3 + 1  # 3 throttled in the first request, 1 in the second
    assert stream.requests == [5, 3, 1]


def test_what_the_stream_refuses_for_too_long_goes_to_the_error_action(tmp_path: Path) -> None:
    stream, clock = Stream(budget=0), Clock()
    acks: list[int] = []
    rule = make_rule(stream, tmp_path, clock, retry_for=3.0)
    rule.offer("alleycat-publish/bike-9", message(9), lambda: acks.append(9))
    for _ in range(10):
        rule.step(timeout=0)
        clock.now += 1.0
    assert acks == [9]
    assert rule.counts.error_action == 1 and rule.counts.written == 0 and rule.counts.pending == 0
    (line,) = (tmp_path / "errors.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["ruleName"] == "alleycatIngest"
    assert entry["topic"] == "alleycat-publish/bike-9"
    assert entry["clientId"] == "bike-9"
    assert base64.b64decode(entry["base64OriginalPayload"]) == message(9)
    assert entry["failures"] == [
        {"failedAction": "KinesisAction", "failedResource": "s", "errorMessage": THROTTLED}
    ]
    assert entry["cloudwatchTraceId"]


def test_retry_for_zero_behaves_as_iot_core_and_retries_nothing(tmp_path: Path) -> None:
    stream, clock = Stream(budget=1), Clock()
    rule = make_rule(stream, tmp_path, clock, retry_for=0.0)
    for racer in range(3):
        rule.offer("alleycat-publish", message(racer), None)
    rule.step(timeout=0)
    assert rule.counts.written == 1 and rule.counts.error_action == 2
    assert stream.requests == [3]


def test_a_whole_request_failing_is_retried_then_fatal_goes_to_the_error_action(
    tmp_path: Path,
) -> None:
    stream = Stream(failures=[RetryableSinkError("503"), FatalSinkError("stream 's' is gone")])
    clock = Clock()
    rule = make_rule(stream, tmp_path, clock)
    rule.offer("alleycat-publish", message(1), None)
    for _ in range(4):
        rule.step(timeout=0)
        clock.now += 1.0
    assert rule.counts.failed_requests == 2
    assert rule.counts.error_action == 1 and rule.fatal == "stream 's' is gone"
    entry = json.loads((tmp_path / "errors.jsonl").read_text())
    assert entry["failures"][0]["errorMessage"] == "stream 's' is gone"


def test_stamping_adds_the_sender_from_its_own_topic(tmp_path: Path) -> None:
    stream = Stream()
    rule = make_rule(stream, tmp_path, Clock(), stamp_client_id=True)
    rule.offer("alleycat-publish/bike-2", message(101), None)
    rule.offer("alleycat-publish", message(102), None)
    rule.offer("alleycat-publish", b"not json", None)
    rule.step(timeout=0)
    first, second, third = stream.records
    assert json.loads(first.data)["clientId"] == "bike-2"
    assert json.loads(second.data)["clientId"] == ""  # the shared topic does not say who sent it
    assert third.data == b"not json"  # passed on as it came, as SELECT * does


def test_a_record_over_a_mebibyte_goes_straight_to_the_error_action(tmp_path: Path) -> None:
    stream = Stream()
    rule = make_rule(stream, tmp_path, Clock())
    rule.offer("alleycat-publish", b"x" * (1024 * 1024 + 1), None)
    rule.step(timeout=0)
    assert stream.requests == [] and rule.counts.error_action == 1
    assert "at most 1,048,576" in (tmp_path / "errors.jsonl").read_text()


def test_requests_stay_within_500_entries(tmp_path: Path) -> None:
    stream = Stream()
    rule = make_rule(stream, tmp_path, Clock())
    for i in range(1200):
        rule.offer("alleycat-publish", message(i), None)
    rule.drain(5.0)
    assert stream.requests == [500, 500, 200]
    assert rule.counts.written == 1200
