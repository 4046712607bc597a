"""The publisher: spool first, a bounded in-flight window, resend after a lost connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alleycat_rider.agent.publisher import RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN, Publisher
from alleycat_rider.agent.spool import Spool
from alleycat_rider.mqtt import PublishDone


class RecordingLink:
    """A link that records publishes; the test completes them."""

    def __init__(self) -> None:
        self.published: list[tuple[bytes, int, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        assert topic == "t"
        self.published.append((payload, qos, token))

    def payloads(self) -> list[bytes]:
        return [payload for payload, _, _ in self.published]

    def tokens(self) -> list[int]:
        return [token for _, _, token in self.published]


def ack(token: int) -> PublishDone:
    return PublishDone(token, delivered=True, rejected=False, code="SUCCESS")


def fail(token: int) -> PublishDone:
    return PublishDone(
        token, delivered=False, rejected=False, code="AWS_ERROR_MQTT5_USER_REQUESTED_STOP"
    )


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool.db", max_messages=100) as spool:
        yield spool


def submit(publisher: Publisher, *numbers: int) -> None:
    for n in numbers:
        publisher.submit(f"u{n}", f"m{n}".encode())


def test_qos1_messages_are_spooled_while_offline_and_sent_in_order_on_connect(
    spool: Spool,
) -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=1, spool=spool, window=10)
    submit(publisher, 0, 1, 2)
    assert link.published == []
    assert publisher.spool_depth == 3
    publisher.on_connected()
    assert link.payloads() == [b"m0", b"m1", b"m2"]
    for token in link.tokens():
        publisher.on_publish_done(ack(token))
    assert publisher.spool_depth == 0
    assert publisher.counters.acked == 3
    assert publisher.settled


def test_a_prepared_message_is_held_back_until_released(spool: Spool) -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=1, spool=spool)
    submit(publisher, 0)
    publisher.prepare("u1", b"m1")
    assert publisher.spool_depth == 2
    publisher.on_connected()
    assert link.payloads() == [b"m0"]
    publisher.on_publish_done(ack(link.tokens()[0]))
    assert link.payloads() == [b"m0"]
    publisher.release()
    assert link.payloads() == [b"m0", b"m1"]


def test_a_prepared_qos0_message_is_sent_on_release() -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=0, spool=None)
    publisher.on_connected()
    publisher.prepare("u0", b"m0")
    assert link.published == []
    publisher.release()
    assert link.payloads() == [b"m0"]


def test_no_more_than_the_window_is_in_flight(spool: Spool) -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=1, spool=spool, window=3)
    submit(publisher, *range(8))
    publisher.on_connected()
    assert link.payloads() == [b"m0", b"m1", b"m2"]
    assert publisher.in_flight == 3
    publisher.on_publish_done(ack(link.tokens()[0]))
    assert link.payloads()[3:] == [b"m3"]
    submit(publisher, 8)
    assert publisher.in_flight == 3
    assert len(link.published) == 4


def test_a_lost_connection_sends_everything_unacknowledged_again_oldest_first(
    spool: Spool,
) -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=1, spool=spool, window=10)
    publisher.on_connected()
    submit(publisher, 0, 1, 2)
    first = link.tokens()
    publisher.on_publish_done(ack(first[0]))
    publisher.on_disconnected()
    for token in first[1:]:  # the SDK fails what was in flight
        publisher.on_publish_done(fail(token))
    submit(publisher, 3)
    assert len(link.published) == 3
    publisher.on_connected()
    assert link.payloads()[3:] == [b"m1", b"m2", b"m3"]
    assert publisher.counters.retried == 2
    assert publisher.counters.sent == 6


def test_a_late_puback_from_a_lost_connection_still_removes_the_message(spool: Spool) -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=1, spool=spool)
    publisher.on_connected()
    submit(publisher, 0)
    publisher.on_disconnected()
    publisher.on_publish_done(ack(link.tokens()[0]))
    assert publisher.spool_depth == 0
    assert publisher.counters.acked == 1


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused(token: int) -> PublishDone:
    """What awscrt says of a QoS 1 publish to a broker that allows QoS 0 only."""
    return PublishDone(
        token, delivered=False, rejected=False, code="AWS_ERROR_MQTT5_PUBLISH_OPTIONS_VALIDATION"
    )


def test_a_failed_publish_on_a_live_connection_is_sent_again_after_a_backoff(
    spool: Spool,
) -> None:
    link = RecordingLink()
    clock = FakeClock()
    publisher = Publisher(link, topic="t", qos=1, spool=spool, monotonic=clock)
    publisher.on_connected()
    submit(publisher, 0, 1)
    publisher.on_publish_done(fail(link.tokens()[0]))
    assert link.payloads() == [b"m0", b"m1"]  # not at once
    assert publisher.resume_in == RETRY_BACKOFF_MIN
    clock.now += RETRY_BACKOFF_MIN / 2
    submit(publisher, 2)  # a new message waits in the spool behind the failed one
    assert link.payloads() == [b"m0", b"m1"]
    clock.now += RETRY_BACKOFF_MIN / 2
    publisher.pump()
    assert link.payloads() == [b"m0", b"m1", b"m0", b"m2"]
    assert publisher.counters.retried == 1
    assert publisher.counters.failed == 1


def test_a_publish_that_always_fails_is_retried_with_a_doubling_backoff_not_a_busy_loop(
    spool: Spool,
) -> None:
    link = RecordingLink()
    clock = FakeClock()
    publisher = Publisher(link, topic="t", qos=1, spool=spool, monotonic=clock)
    publisher.on_connected()
    submit(publisher, 0)
    attempts_at: list[float] = []
    # Ten minutes of a broker refusing every publish, the agent pumping four times a second.
    for _ in range(2400):
        while len(link.published) > len(attempts_at):
            attempts_at.append(clock.now)
            publisher.on_publish_done(refused(link.tokens()[len(attempts_at) - 1]))
        clock.now += 0.25  # exact in binary: the gaps come out exact
        publisher.pump()
    gaps = [b - a for a, b in zip(attempts_at, attempts_at[1:], strict=False)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_BACKOFF_MAX]
    assert set(gaps[5:]) == {RETRY_BACKOFF_MAX}
    assert len(attempts_at) < 30  # not tens of thousands a second
    assert publisher.counters.failed == len(attempts_at)
    assert publisher.spool_depth == 1  # still spooled, never given up on


def test_failures_of_a_whole_window_share_one_pause_and_a_puback_resets_the_backoff(
    spool: Spool,
) -> None:
    link = RecordingLink()
    clock = FakeClock()
    publisher = Publisher(link, topic="t", qos=1, spool=spool, window=3, monotonic=clock)
    publisher.on_connected()
    submit(publisher, 0, 1, 2)
    for token in link.tokens():
        publisher.on_publish_done(fail(token))
    assert publisher.resume_in == RETRY_BACKOFF_MIN  # one pause for three failures
    clock.now += RETRY_BACKOFF_MIN
    publisher.pump()
    assert link.payloads()[3:] == [b"m0", b"m1", b"m2"]
    for token in link.tokens()[3:]:
        publisher.on_publish_done(ack(token))
    assert publisher.counters.acked == 3
    submit(publisher, 3)
    publisher.on_publish_done(fail(link.tokens()[-1]))
    assert publisher.resume_in == RETRY_BACKOFF_MIN  # started again from the shortest


def test_a_rejected_message_leaves_the_spool_and_is_counted(spool: Spool) -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=1, spool=spool)
    publisher.on_connected()
    submit(publisher, 0)
    token = link.tokens()[0]
    publisher.on_publish_done(
        PublishDone(token, delivered=False, rejected=True, code="NOT_AUTHORIZED")
    )
    assert publisher.spool_depth == 0
    assert publisher.counters.rejected == 1
    assert publisher.counters.acked == 0


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    link = RecordingLink()
    with Spool(tmp_path / "spool.db", max_messages=3) as spool:
        publisher = Publisher(link, topic="t", qos=1, spool=spool)
        submit(publisher, *range(5))
        assert publisher.counters.dropped == 2
        publisher.on_connected()
    assert link.payloads() == [b"m2", b"m3", b"m4"]


def test_qos0_messages_are_dropped_while_offline_and_never_spooled() -> None:
    link = RecordingLink()
    publisher = Publisher(link, topic="t", qos=0, spool=None)
    submit(publisher, 0)
    publisher.on_connected()
    submit(publisher, 1)
    assert link.published == [(b"m1", 0, link.tokens()[0])]
    publisher.on_publish_done(ack(link.tokens()[0]))
    publisher.on_disconnected()
    submit(publisher, 2)
    assert publisher.counters.dropped == 2
    assert publisher.counters.acked == 1
    assert publisher.counters.produced == 3
    assert publisher.spool_depth == 0


def test_qos1_needs_a_spool() -> None:
    with pytest.raises(ValueError):
        Publisher(RecordingLink(), topic="t", qos=1, spool=None)
