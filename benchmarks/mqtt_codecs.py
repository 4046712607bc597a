"""MQTT 5 codecs for the fleet's connection layer: the CPU of what every message costs.

Each QoS 1 ride message is one PUBLISH encoded and one PUBACK decoded. This measures both, per
message, for each candidate library installed:

- ``mqtt5`` (Rust, sans-IO): ``PublishPacket(...).write()`` and ``mqtt5.read(view)``;
- ``moat-lib-mqtt`` (pure Python, sans-IO): ``MQTTPublishPacket.encode`` and ``decode_packet``;
- ``gmqtt``: ``PublishPacket.build_package`` (its decoder lives inside its client's handler, bound
  to a task per connection, so it cannot be timed alone);
- ``paho-mqtt`` has no codec apart from its client (a socket and a thread or ``select()`` loop per
  connection), so it is listed, not timed.

Usage::

    .venv/bin/python -m benchmarks.mqtt_codecs
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
from collections.abc import Callable

from alleycat_rider.core.message import RideEvent, RideMessage, uuid4
from benchmarks.command import load_average

TOPIC = "alleycat-publish"
ROUNDS = 50_000


def ride_payload() -> bytes:
    rng = random.Random(1)
    message = RideMessage(
        uuid=uuid4(rng), event=RideEvent.UPDATE, device_timestamp=1_700_000_000_000, second=17,
        race_id=5_666_666, name="rider100", racer_id=100, class_id=3, cadence=88.0,
        resistance=41.0,
    )  # fmt: skip
    return message.to_json()


def per_message_us(work: Callable[[int], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for n in range(ROUNDS):
            work(n)
        best = min(best, time.process_time() - started)
    return best / ROUNDS * 1e6


def mqtt5_codec(payload: bytes) -> tuple[Callable[[int], object], Callable[[int], object]]:
    import mqtt5

    qos = mqtt5.QoS.AT_LEAST_ONCE
    puback = mqtt5.PubAckPacket(packet_id=7).write()

    def encode(n: int) -> object:
        return mqtt5.PublishPacket(TOPIC, payload, qos=qos, packet_id=n % 65535 + 1).write()

    def decode(_n: int) -> object:
        return mqtt5.read(memoryview(puback))

    return encode, decode


def moat_codec(payload: bytes) -> tuple[Callable[[int], object], Callable[[int], object]]:
    from moat.lib.mqtt._types import (
        MQTTPublishAckPacket,
        MQTTPublishPacket,
        QoS,
        ReasonCode,
        decode_packet,
    )

    out = bytearray()
    MQTTPublishAckPacket(packet_id=7, reason_code=ReasonCode.SUCCESS).encode(out)
    puback = bytes(out)

    def encode(n: int) -> object:
        buffer = bytearray()
        packet = MQTTPublishPacket(
            topic=TOPIC, payload=payload, qos=QoS.AT_LEAST_ONCE, packet_id=n % 65535 + 1
        )
        packet.encode(buffer)
        return buffer

    def decode(_n: int) -> object:
        return decode_packet(memoryview(puback))

    return encode, decode


def gmqtt_codec(payload: bytes) -> tuple[Callable[[int], object], None]:
    from gmqtt.client import Message
    from gmqtt.mqtt.constants import MQTTv50
    from gmqtt.mqtt.package import PublishPacket
    from gmqtt.mqtt.utils import IdGenerator

    class Protocol:
        proto_ver = MQTTv50
        id_generator = IdGenerator()

    protocol = Protocol()

    def encode(_n: int) -> object:
        mid, packet = PublishPacket.build_package(Message(TOPIC, payload, qos=1), protocol)
        protocol.id_generator.free_id(mid)  # acknowledged: as its client frees it on a PUBACK
        return packet

    return encode, None


def main() -> None:
    payload = ride_payload()
    print(
        f"MQTT 5 PUBLISH (QoS 1, {len(payload)}-byte ride message) encoded and PUBACK decoded, "
        f"per message, best of 3 x {ROUNDS:,}; load average {load_average()}; "
        f"{os.cpu_count()} cores"
    )
    candidates = {"mqtt5": mqtt5_codec, "moat-lib-mqtt": moat_codec, "gmqtt": gmqtt_codec}
    modules = {"mqtt5": "mqtt5", "moat-lib-mqtt": "moat.lib.mqtt", "gmqtt": "gmqtt"}
    for name, make in candidates.items():
        if importlib.util.find_spec(modules[name].split(".")[0]) is None:
            print(f"  {name:14} not installed")
            continue
        encode, decode = make(payload)
        encoded = per_message_us(encode)
        decoded = (
            "n/a (inside its client)" if decode is None else f"{per_message_us(decode):.2f} us"
        )
        print(f"  {name:14} PUBLISH {encoded:6.2f} us   PUBACK {decoded}")
    print("  paho-mqtt      no codec apart from its client: not timed")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
