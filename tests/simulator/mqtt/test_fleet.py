"""``simulate --via mqtt`` on a real mosquitto with mutual TLS: every rider its own connection."""

from __future__ import annotations

import collections
import json
import random
import re
import shutil
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
from alleycat_rider.iot.devcerts import make_dev_pki
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


def connected_from(log: str) -> dict[str, tuple[str, str]]:
    """client id -> (source address, user name) of each connection mosquitto logged."""
    found = {}
    for line in log.splitlines():
        match = re.search(r"New client connected from ([\d.]+):\d+ as (\S+) .*u'([^']*)'", line)
        if match:
            found[match.group(2)] = (match.group(1), match.group(3))
    return found


def test_riders_are_dealt_over_two_brokers_from_two_source_addresses(
    mqtt_pki: TestPki, mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    second = RunningBroker(mqtt_pki, tmp_path / "second.log")
    second.start()
    try:
        endpoints = f"127.0.0.1:{mqtt_broker.port},127.0.0.1:{second.port}"
        with mqtt_broker.subscriber(TOPIC) as one, second.subscriber(TOPIC) as two:
            summary = run_fleet(
                mqtt_broker, 8, 4, "--mqtt-endpoint", endpoints,
                "--source-addresses", "127.0.0.2-3",
            )  # fmt: skip
            first_half = one.wait_for(16, timeout=10)
            second_half = two.wait_for(16, timeout=10)
        first_log, second_log = mqtt_broker.log_path.read_text(), second.log_path.read_text()
    finally:
        second.close()
    assert summary["generated"] == summary["acked"] == 32 and summary["connects"] == 8
    assert summary["brokers"] == endpoints.split(",")
    # Rider i on broker i mod 2; each broker's riders from the two addresses in turn.
    assert {RideMessage.from_json(p).racer_id for p in first_half} == {100, 102, 104, 106}
    assert {RideMessage.from_json(p).racer_id for p in second_half} == {101, 103, 105, 107}
    first, second_seen = connected_from(first_log), connected_from(second_log)
    assert {first[f"alleycat-{n}"][0] for n in (100, 104)} == {"127.0.0.2"}
    assert {first[f"alleycat-{n}"][0] for n in (102, 106)} == {"127.0.0.3"}
    assert {second_seen[f"alleycat-{n}"][0] for n in (101, 105)} == {"127.0.0.2"}
    assert {second_seen[f"alleycat-{n}"][0] for n in (103, 107)} == {"127.0.0.3"}
    assert adds_up(summary)


def test_riders_use_their_own_certificates_and_a_refused_one_does_not_stop_the_others(
    mqtt_pki: TestPki, mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    bikes = tmp_path / "bikes"
    bikes.mkdir()
    for name in ("ca.crt", "ca.key"):  # the broker's CA signs the bikes' certificates
        shutil.copy(mqtt_pki.directory / name, bikes / name)
    make_dev_pki(bikes, ["alleycat-100", "alleycat-101"])
    intruder_cert, intruder_key = mqtt_pki.foreign_client  # from a CA the broker does not trust
    shutil.copy(intruder_cert, bikes / "alleycat-102.crt")
    shutil.copy(intruder_key, bikes / "alleycat-102.key")
    with mqtt_broker.subscriber(TOPIC) as subscriber:
        summary = run_fleet(mqtt_broker, 4, 5, "--certs-dir", str(bikes))
        received = subscriber.wait_for(15, timeout=10)
    users = {client: user for client, (_source, user) in connected_from(
        mqtt_broker.log_path.read_text()).items()}  # fmt: skip
    # mosquitto names each connection by its certificate's common name.
    assert users["alleycat-100"] == "alleycat-100" and users["alleycat-101"] == "alleycat-101"
    assert users["alleycat-103"] == "bike-3"  # no certificate of its own: the fleet's
    assert "alleycat-102" not in users
    assert summary["connects"] == 3 and summary["riders_refused"] == 1
    assert summary["connect_failures"] >= 1
    assert any("refused the device certificate" in r and "alleycat-102.crt" in r
               for r in summary["connect_failure_reasons"])  # fmt: skip
    assert summary["tls_contexts"] == 4  # three bikes' own and the fleet's, each loaded once
    assert summary["acked"] == 15 and {RideMessage.from_json(p).racer_id for p in received} == {
        100, 101, 103,
    }  # fmt: skip
    assert summary["held"] == 5 and adds_up(summary)  # the refused rider's messages, counted


class _JoiningSource:
    """Records for rider 0 and, from the second second on, rider 1, which the fleet was not
    made with: as a Locust user joining from its own thread between the fleet's growing and its
    taking of the due records."""

    def __init__(self, seconds: float) -> None:
        self.config = FleetConfig(riders=1)
        self.started = time.time()
        self.until = self.started + seconds
        self.second = 0

    @property
    def done(self) -> bool:
        return time.time() >= self.until

    def emit_until(self, now: float, out: list[Record], limit: int) -> int:
        if now < self.started + self.second or self.done:
            return 0
        riders = [0, 1] if self.second else [0]
        self.second += 1
        out.extend(Record(b'{"r":%d}' % r, "", None, now, rider=r) for r in riders)
        return len(riders)


def test_a_record_of_a_rider_joined_meanwhile_grows_the_fleet_and_is_delivered(
    mqtt_broker: RunningBroker,
) -> None:
    cert, key = mqtt_broker.pki.client("bike-3")
    settings = MqttSettings(
        endpoint="127.0.0.1", port=mqtt_broker.port, client_id="x", cert=cert, key=key,
        ca=mqtt_broker.pki.ca_cert,
    )  # fmt: skip
    source = _JoiningSource(seconds=4)
    run = MqttFleet(source, MqttFleetOptions(settings=settings, qos=1))  # type: ignore[arg-type]
    worker = threading.Thread(target=run.run)
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    assert len(run.riders) == 2 and run.counts.connects == 2
    assert run.counts.generated == 7 and run.counts.acked == 7  # 4 of rider 0, 3 of rider 1
