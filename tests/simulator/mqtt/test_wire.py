"""The fleet's link at its bytes: what it writes for a publish and how it reads PUBACKs."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import mqtt5
import pytest

from alleycat_rider.mqtt import MqttSettings
from simulator.mqtt import connect, wire


class Events:
    def __init__(self) -> None:
        self.done: list[tuple[int, bool, bool, str]] = []
        self.lost = 0

    def link_connected(self, index: int) -> None:
        pass

    def link_failed(self, index: int, message: str, refused: bool) -> None:
        pass

    def link_lost(self, index: int) -> None:
        self.lost += 1

    def publish_done(
        self, index: int, token: int, delivered: bool, rejected: bool, code: str
    ) -> None:
        self.done.append((token, delivered, rejected, code))


@pytest.fixture
def linked() -> Iterator[tuple[wire.Link, socket.socket, Events]]:
    """A connected plain-TCP link on one end of a socket pair; the broker's end, and its events."""
    loop = asyncio.new_event_loop()
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.settimeout(5)
    events = Events()
    settings = MqttSettings(endpoint="127.0.0.1", port=1, client_id="")
    link = wire.Link(
        loop, events, 0, "rider", connect.Endpoint("127.0.0.1", 1), None, None, settings,
        random.Random(1),
    )  # fmt: skip
    link._sock, link._fd, link.state = ours, ours.fileno(), wire.CONNECTED
    yield link, broker, events
    link.stop()
    broker.close()
    loop.close()


def read_exactly(broker: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += broker.recv(size - len(data))
    return data


@pytest.mark.parametrize("size", [0, 100, 202, 16_000, 200_000])
@pytest.mark.parametrize("topic", ["alleycat-publish", "vélo/" + "x" * 300])
def test_a_publish_is_the_bytes_the_codec_writes(
    linked: tuple[wire.Link, socket.socket, Events], size: int, topic: str
) -> None:
    link, broker, events = linked
    payload = bytes(range(256)) * (size // 256) + b"r" * (size % 256)
    link.publish(topic, payload, 1, token=7)
    link.publish(topic, payload, 0, token=8)
    qos1 = mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1).write()
    qos0 = mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS.AT_MOST_ONCE).write()
    expected = qos1 + qos0
    got = b""
    while link._out is not None:  # a large one waits for room in the socket: read, write more
        got += broker.recv(1 << 20)
        link._writable()
    got += read_exactly(broker, len(expected) - len(got))
    assert got == expected
    assert events.done == [(8, True, False, "WRITTEN")]  # QoS 0: done once written


def test_pubacks_short_and_with_reasons_end_their_publishes(
    linked: tuple[wire.Link, socket.socket, Events],
) -> None:
    link, broker, events = linked
    for token in (1, 2, 3, 4):
        link.publish("t", b"m", 1, token=token)
    read_exactly(
        broker,
        4 * len(mqtt5.PublishPacket("t", b"m", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1).write()),
    )
    short = b"\x40\x02\x00\x01"  # SUCCESS without a reason code: the short form
    refused = mqtt5.PubAckPacket(packet_id=2, reason_code=mqtt5.PubAckReasonCode.NOT_AUTHORIZED)
    no_one = mqtt5.PubAckPacket(
        packet_id=3, reason_code=mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS
    )
    last = mqtt5.PubAckPacket(packet_id=4).write()
    # All in one read, the last one split over two.
    broker.sendall(short + refused.write() + no_one.write() + last[:2])
    link._readable()
    broker.sendall(last[2:])
    link._readable()
    assert events.done == [
        (1, True, False, "SUCCESS"),
        (2, False, True, "NOT_AUTHORIZED"),
        (3, True, False, "NO_MATCHING_SUBSCRIBERS"),
        (4, True, False, "SUCCESS"),
    ]
    broker.sendall(b"\x40\x02\x00\x09")  # a packet id nobody waits for: read, nothing to end
    link._readable()
    assert len(events.done) == 4 and link.state == wire.CONNECTED


def test_bytes_that_are_not_mqtt_drop_the_connection_and_what_it_had_in_flight(
    linked: tuple[wire.Link, socket.socket, Events],
) -> None:
    link, broker, events = linked
    link.publish("t", b"m", 1, token=5)
    broker.sendall(b"\xff\xff\xff\xff\xff")
    link._readable()
    assert events.done == [(5, False, False, "CONNECTION_LOST")]
    assert events.lost == 1 and link.state == wire.WAITING


def test_a_broker_name_is_looked_up_by_the_loop_once_and_an_address_never() -> None:
    loop = connect.new_event_loop()
    try:
        resolver = connect.Resolver(loop)
        assert resolver.address("127.0.0.1", 8883) == (socket.AF_INET, ("127.0.0.1", 8883))
        assert resolver.address("localhost", 8883) is None  # a name: looked up first
        lookup = resolver.lookup("localhost", 8883)
        assert resolver.lookup("localhost", 8883) is lookup  # riders waiting share one
        loop.run_until_complete(lookup)
        found = resolver.address("localhost", 8883)
        assert found is not None and found[1][1] == 8883
        assert found[1][0] in ("127.0.0.1", "::1")
    finally:
        loop.close()
