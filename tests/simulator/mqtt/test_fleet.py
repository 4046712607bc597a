"""``simulate --via mqtt`` on a real mosquitto with mutual TLS: every rider its own connection."""

from __future__ import annotations

import collections
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.core.message import RideMessage
from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.mqtt import MqttSettings
from simulator.engine.batching import Record
from simulator.engine.fleet import Fleet, FleetConfig
from simulator.mqtt.fleet import MAX_PUBLISHES_PER_SECOND, MqttFleet, MqttFleetOptions
from tests.servers.mosquitto import RunningBroker, TestPki
from tests.servers.ports import free_port

#: Real servers and several processes, over tens of seconds: run once, not on both builds.
pytestmark = pytest.mark.e2e

TOPIC = "alleycat-publish"


def fleet_args(broker: RunningBroker, riders: int, duration: int, *extra: str) -> list[str]:
    cert, key = broker.pki.client("bike-3")
    return [
        sys.executable, "-m", "alleycat", "simulate", "--via", "mqtt", "--riders", str(riders),
        "--duration", str(duration), "--mqtt-port", str(broker.port), "--ca",
        str(broker.pki.ca_cert), "--cert", str(cert), "--key", str(key), "--seed", "3",
        "--json", *extra,
    ]  # fmt: skip


def run_fleet(broker: RunningBroker, riders: int, duration: int, *extra: str) -> dict[str, Any]:
    completed = subprocess.run(
        fleet_args(broker, riders, duration, *extra),
        capture_output=True, text=True, timeout=duration + 60,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary: dict[str, Any] = json.loads(completed.stdout)
    return summary


def adds_up(s: dict[str, Any]) -> bool:
    accounted = s["acked"] + s["sent_unacknowledged"] + s["dropped"] + s["in_flight"] + s["held"]
    return bool(s["generated"] == accounted)


def test_200_riders_at_qos_1_deliver_every_message_once(mqtt_broker: RunningBroker) -> None:
    with mqtt_broker.subscriber(TOPIC) as subscriber:
        summary = run_fleet(mqtt_broker, 200, 20)
        received = subscriber.wait_for(4000, timeout=10)
    assert summary["generated"] == summary["acked"] == 4000
    assert summary["dropped"] == summary["in_flight"] == summary["held"] == 0
    assert summary["connects"] == 200 and summary["reconnects"] == 0
    messages = [RideMessage.from_json(payload) for payload in received]
    assert len(messages) == 4000 == len({m.uuid for m in messages})
    per_rider = collections.Counter(m.racer_id for m in messages)
    assert per_rider == {100 + i: 20 for i in range(200)}
    assert summary["puback_latency_ms"]["p99"] >= summary["puback_latency_ms"]["p50"] > 0 or (
        summary["puback_latency_ms"]["p50"] == 0
    )
    assert adds_up(summary)


def test_qos_0_counts_what_it_sent_without_acknowledgement(mqtt_broker: RunningBroker) -> None:
    with mqtt_broker.subscriber(TOPIC) as subscriber:
        summary = run_fleet(mqtt_broker, 50, 5, "--qos", "0")
        sent = summary["sent_unacknowledged"]
        received = subscriber.wait_for(sent, timeout=10)
    assert summary["acked"] == 0 and sent > 0
    assert sent + summary["dropped"] == summary["generated"] == 250
    assert len({json.loads(p)["uuid"] for p in received}) == sent
    assert adds_up(summary)


def test_a_five_second_outage_is_ridden_out_at_qos_1(mqtt_broker: RunningBroker) -> None:
    received: list[bytes] = []
    process = subprocess.Popen(
        fleet_args(mqtt_broker, 20, 20), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with mqtt_broker.subscriber(TOPIC) as before:
            before.wait_for(40, timeout=20)
            mqtt_broker.stop()
            time.sleep(5)
            received += before.messages
        # Hold the fleet while the broker comes back and the observer subscribes first.
        process.send_signal(signal.SIGSTOP)
        try:
            mqtt_broker.start()
            after_cm = mqtt_broker.subscriber(TOPIC)
            after = after_cm.__enter__()
        finally:
            process.send_signal(signal.SIGCONT)
        try:
            stdout, stderr = process.communicate(timeout=80)
            summary = json.loads(stdout)
            received += after.wait_for(summary["acked"] - len(received), timeout=10)
        finally:
            after_cm.__exit__(None, None, None)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert summary["generated"] == summary["acked"] == 400, stderr[-2000:]
    assert summary["dropped"] == 0 and summary["reconnects"] >= 20
    assert summary["resent"] > 0
    uuids = [json.loads(p)["uuid"] for p in received]
    assert len(set(uuids)) == 400


def broker_log_counts(log: str, pattern: str) -> collections.Counter[tuple[str, str]]:
    """(second, client) -> lines matching ``pattern`` (a regex with one group: the client)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in log.splitlines():
        stamp, _, rest = line.partition(": ")
        if match := re.search(pattern, rest):
            counts[(stamp, match.group(1))] += 1
    return counts


def test_connections_open_at_the_connect_rate_measured_at_the_broker(
    mqtt_broker: RunningBroker,
) -> None:
    started = time.time()
    summary = run_fleet(mqtt_broker, 60, 4, "--connect-rate", "20")
    assert summary["connects"] == 60
    per_second = collections.Counter(
        second
        for (second, _client), n in broker_log_counts(
            mqtt_broker.log_path.read_text(), r"New client connected from \S+ as (alleycat-\d+)"
        ).items()
        for _ in range(n)
        if int(second) >= int(started)
    )
    assert sum(per_second.values()) == 60
    assert max(per_second.values()) <= 21  # 20 a second, and one whole second may hold 21
    assert len(per_second) >= 3


def test_a_connection_never_publishes_over_iot_cores_limit(
    mqtt_pki: TestPki, tmp_path: Path
) -> None:
    port = free_port()
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("ab") as log:
        broker = MosquittoBroker(mqtt_pki, port=port, log=log, extra_config=["log_type all"])
        broker.start()
        try:
            cert, key = mqtt_pki.client("bike-3")
            settings = MqttSettings(
                endpoint="127.0.0.1", port=port, client_id="x", cert=cert, key=key,
                ca=mqtt_pki.ca_cert,
            )  # fmt: skip
            fleet = Fleet(
                FleetConfig(riders=1), start=time.time(), duration=3,
                keyer=lambda riders, _stamps: [("", None)] * len(riders), rng=random.Random(1),
            )  # fmt: skip
            run = MqttFleet(fleet, MqttFleetOptions(settings=settings, qos=1))
            # A rider back from a long time offline: 250 messages waiting for its connection.
            for n in range(250):
                run._hold(run.riders[0], Record(b'{"n":%d}' % n, "", None, time.time()))
            worker = threading.Thread(target=run.run)
            worker.start()
            worker.join(60)
        finally:
            broker.stop()
    assert run.counts.acked == 253 and run.counts.resent >= 250  # new ones queue behind the held
    per_second = broker_log_counts(log_path.read_text(), r"Received PUBLISH from (alleycat-100) ")
    assert sum(per_second.values()) == 253
    assert max(per_second.values()) <= MAX_PUBLISHES_PER_SECOND
    assert len(per_second) >= 3  # 250 held messages took at least three seconds
