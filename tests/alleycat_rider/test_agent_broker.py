"""`alleycat ride` as a real process against a real mosquitto with mutual TLS.

Each test runs the command as users do (``python -m alleycat ride``), reads its JSON log lines,
and checks what a subscriber on the broker receives: counts, uuids and order, never durations.
Every process started here is stopped here.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.agent.spool import Spool
from alleycat_rider.core.message import FIELDS, RideEvent, RideMessage
from tests.servers.mosquitto import RunningBroker

TOPIC = "alleycat-publish"
RESULTS_TOPIC = "alleycat-subscribe"
WAIT = 20.0


class AgentProcess:
    """``alleycat ride`` in a subprocess, its JSON log lines collected as they come."""

    def __init__(self, args: list[str]) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ALLEYCAT_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "alleycat", "ride", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(json.loads(line))
                self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def events(self, message: str) -> list[dict[str, Any]]:
        """The log lines with this message so far."""
        with self._changed:
            return [line for line in self.lines if line["message"] == message]

    def produced(self) -> list[str]:
        """The uuids of every message the agent has made so far, in order."""
        uuids = [line["uuid"] for line in self.events("message")]
        uuids += [line["final_uuid"] for line in self.events("stopping") if line["final_uuid"]]
        return uuids

    def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``condition`` holds, re-checking as log lines arrive."""
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise AssertionError(f"gave up waiting; log: {self.lines[-5:]} {self.stderr}")

    def wait_for(self, message: str, count: int = 1) -> dict[str, Any]:
        """Wait until ``count`` lines with ``message`` were logged; return the last of them."""
        self.wait_until(lambda: len(self.events(message)) >= count)
        return self.events(message)[-1]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        """Send ``sig`` and wait for the process to exit; return its status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return status

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for thread in self._threads:
            thread.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def agent(args: list[str]) -> Iterator[AgentProcess]:
    process = AgentProcess(args)
    try:
        yield process
    finally:
        process.close()


def agent_args(
    broker: RunningBroker, spool: Path, *, qos: int = 1, device: str = "bike-1"
) -> list[str]:
    cert, key = broker.pki.client(device)
    return [
        "--endpoint", broker.host, "--port", str(broker.port),
        "--cert", str(cert), "--key", str(key), "--ca", str(broker.pki.ca_cert),
        "--client-id", device, "--racer-id", "101", "--name", "Ada", "--class-id", "2",
        "--qos", str(qos), "--spool", str(spool), "--sensor", "mock", "--seed", "7",
        "--log-format", "json", "--log-level", "debug", "--race-seconds", "300",
    ]  # fmt: skip


def uuids(payloads: list[bytes]) -> list[str]:
    return [json.loads(payload)["uuid"] for payload in payloads]


@pytest.mark.parametrize("qos", [0, 1])
def test_messages_arrive_once_a_second_with_the_exact_schema(
    mqtt_broker: RunningBroker, tmp_path: Path, qos: int
) -> None:
    with (
        mqtt_broker.subscriber(TOPIC) as subscriber,
        agent(agent_args(mqtt_broker, tmp_path / "spool.db", qos=qos)) as rider,
    ):
        rider.wait_for("connected")
        online_from = len(rider.events("message"))
        rider.wait_for("message", count=online_from + 4)
        assert rider.stop() == 0
        produced = rider.produced()
        stopped = rider.events("stopped")[0]
        received = subscriber.wait_for(stopped["acked"])
    # QoS 0 drops what is made before the first connection (if a second began before it); QoS 1
    # spools it and sends it once connected.
    sent = produced[stopped["dropped"] :]
    assert uuids(received) == sent
    assert stopped["acked"] + stopped["dropped"] == stopped["produced"] == len(produced)
    assert stopped["dropped"] == 0 if qos == 1 else stopped["dropped"] <= 1
    assert len(sent) >= 5
    messages = [RideMessage.from_json(payload) for payload in received]
    assert all(list(json.loads(payload)) == list(FIELDS) for payload in received)
    seconds = [m.second for m in messages]
    assert seconds == list(range(seconds[0], seconds[0] + len(messages)))
    assert [m.event for m in messages] == [RideEvent.UPDATE] * (len(messages) - 1) + [
        RideEvent.FINAL
    ]
    assert {(m.racer_id, m.name, m.class_id) for m in messages} == {(101, "Ada", 2)}
    assert len({m.race_id for m in messages}) == 1
    stamps = [m.device_timestamp for m in messages[:-1]]
    assert 900 <= statistics.median(b - a for a, b in itertools.pairwise(stamps)) <= 1100
    assert (tmp_path / "spool.db").exists() == (qos == 1)


def test_with_qos_1_every_message_arrives_across_a_broker_outage(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    received: list[bytes] = []
    with agent(agent_args(mqtt_broker, tmp_path / "spool.db")) as rider:
        with mqtt_broker.subscriber(TOPIC) as before:
            rider.wait_for("connected")
            rider.wait_for("message", count=2)
            mqtt_broker.stop()
            rider.wait_for("disconnected")
            offline_from = len(rider.events("message"))
            # Ten seconds of riding with no broker, counted in the agent's own messages.
            rider.wait_for("message", count=offline_from + 10)
            received += before.messages
        # Hold the agent while the broker comes back and the observer subscribes first: the
        # broker keeps no messages for subscribers that are not connected yet.
        rider.process.send_signal(signal.SIGSTOP)
        try:
            mqtt_broker.start()
            after_cm = mqtt_broker.subscriber(TOPIC)
            after = after_cm.__enter__()
        finally:
            rider.process.send_signal(signal.SIGCONT)
        try:
            reconnected = rider.wait_for("connected", count=2)
            assert reconnected["spool_depth"] >= 10
            assert rider.stop() == 0
            produced = rider.produced()
            missing = set(produced) - set(uuids(received))
            after.wait_for(len(missing))
            received += after.messages
        finally:
            after_cm.__exit__(None, None, None)
    assert set(produced) <= set(uuids(received))
    stopped = rider.events("stopped")[0]
    assert stopped["spool_depth"] == 0
    assert stopped["dropped"] == 0
    assert stopped["produced"] == len(produced)


def test_messages_spooled_before_a_sigkill_are_sent_first_after_a_restart(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.db"
    with (
        mqtt_broker.subscriber(TOPIC) as before,
        agent(agent_args(mqtt_broker, spool_path)) as first,
    ):
        first.wait_for("connected")
        first.wait_for("message", count=2)
        mqtt_broker.stop()
        first.wait_for("disconnected")
        offline_from = len(first.events("message"))
        first.wait_for("message", count=offline_from + 3)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        produced_first = first.produced()
        received_first = uuids(before.messages)
    with Spool(spool_path) as spool:
        spooled = [message.uuid for message in spool.pending(limit=1000)]
    # The spool holds everything the subscriber did not get, and in the order it was made.
    assert set(produced_first) - set(received_first) <= set(spooled)
    assert [u for u in spooled if u in produced_first] == [
        u for u in produced_first if u in spooled
    ]

    mqtt_broker.start()
    with (
        mqtt_broker.subscriber(TOPIC) as after,
        agent(agent_args(mqtt_broker, spool_path)) as second,
    ):
        assert second.wait_for("starting")["spool_depth"] == len(spooled)
        second.wait_for("connected")
        second.wait_for("message", count=2)
        assert second.stop() == 0
        produced_second = second.produced()
        replayed = after.wait_for(len(spooled) + len(produced_second))
    assert uuids(replayed)[: len(spooled)] == spooled
    assert set(produced_first + produced_second) <= set(received_first) | set(uuids(replayed))
    assert second.events("stopped")[0]["spool_depth"] == 0


def test_an_agent_killed_and_started_again_continues_its_race(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.db"
    with mqtt_broker.subscriber(TOPIC) as subscriber:
        with agent(agent_args(mqtt_broker, spool_path)) as first:
            first.wait_for("connected")
            first.wait_for("message", count=4)
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no final message
            made_first = len(first.produced())
        with agent(agent_args(mqtt_broker, spool_path)) as second:
            second.wait_for("message", count=3)
            continued = second.events("race continued")
            assert second.stop() == 0
            made = made_first + len(second.produced())
        # QoS 1: a message spooled before the kill may arrive twice (the same uuid).
        received = subscriber.wait_for(made)
        while len(set(uuids(received))) < made and len(received) < 2 * made:
            received = subscriber.wait_for(len(received) + 1)
    messages = list({m.uuid: m for m in map(RideMessage.from_json, received)}.values())
    assert len(messages) == made
    # One race: one id, its seconds rising across the restart (those the agent was down for
    # are missing), and one final message, at its end.
    assert len({m.race_id for m in messages}) == 1
    seconds = [m.second for m in messages]
    assert seconds == sorted(set(seconds)) and seconds[0] == 1
    assert [(c["race_id"], c["second"]) for c in continued] == [
        (messages[0].race_id, seconds[made_first])
    ]
    assert [m.event for m in messages] == [RideEvent.UPDATE] * (len(messages) - 1) + [
        RideEvent.FINAL
    ]
    # The final message was sent: the race is over, and a new start begins a new one.
    with agent(agent_args(mqtt_broker, spool_path)) as third:
        third.wait_for("message")
        assert third.events("message")[0]["second"] == 1
        assert third.events("race continued") == []


def test_a_certificate_from_another_ca_is_refused_with_one_clear_line(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    cert, key = mqtt_broker.foreign_client
    args = agent_args(mqtt_broker, tmp_path / "spool.db")
    args[args.index("--cert") + 1] = str(cert)
    args[args.index("--key") + 1] = str(key)
    with agent(args) as rider:
        status = rider.process.wait(30)
        rider.close()
    assert status == 1
    assert len(rider.stderr) == 1, rider.stderr
    line = rider.stderr[0]
    assert line.startswith("Error: TLS with 127.0.0.1:")
    assert "refused the device certificate" in line and str(cert) in line
    assert not [line for line in rider.lines if line["level"] == "error"]  # said once, on stderr


def test_standings_are_parsed_from_a_published_results_message(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    results = json.dumps({"101": 151.5, "102": 160.25, "103": 120.0, "104": 155.0})
    message = {"msg": "results", "classId": "2", "raceId": "race-5985743", "ts": "1764186600000"}
    with agent(agent_args(mqtt_broker, tmp_path / "spool.db")) as rider:
        rider.wait_for("subscribed")
        with mqtt_broker.client("bike-2") as backend:
            backend.publish(RESULTS_TOPIC, b"{not json", qos=0)
            backend.publish(RESULTS_TOPIC, json.dumps({**message, "results": results}).encode())
            standings = rider.wait_for("standings")
        assert rider.stop() == 0
    assert standings["place"] == 3
    assert standings["riders"] == 4
    assert standings["leader_output"] == 160.25
    assert standings["race"] == "race-5985743"
    assert len(rider.events("malformed results message ignored")) == 1


def test_a_poisonous_retained_results_message_is_logged_and_the_ride_goes_on(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    from awscrt import mqtt5

    deep = b'{"msg":"results","raceId":"race-1","classId":2,"ts":1,"results":' + b"[" * 50_000
    deep += b"]" * 50_000 + b"}"
    with mqtt_broker.client("bike-2") as backend:
        backend._client.publish(
            mqtt5.PublishPacket(
                topic=RESULTS_TOPIC, payload=deep, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True
            )
        ).result(5)
        with agent(agent_args(mqtt_broker, tmp_path / "spool.db")) as rider:
            rider.wait_for("malformed results message ignored")
            sent = len(rider.events("message"))
            rider.wait_for("message", count=sent + 3)  # still riding
            assert rider.stop() == 0
    warning = rider.events("malformed results message ignored")[0]
    assert "nested too deeply" in warning["error"]


def test_with_own_topic_every_message_goes_to_the_bikes_own_topic_only(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    with (
        mqtt_broker.subscriber(f"{TOPIC}/bike-1") as own,
        mqtt_broker.subscriber(TOPIC) as shared,
        agent([*agent_args(mqtt_broker, tmp_path / "spool.db"), "--own-topic"]) as rider,
    ):
        starting = rider.wait_for("starting")
        rider.wait_for("connected")
        rider.wait_for("message", count=len(rider.events("message")) + 2)
        assert rider.stop() == 0
        stopped = rider.events("stopped")[0]
        received = own.wait_for(stopped["acked"])
    assert starting["topic"] == f"{TOPIC}/bike-1"
    assert uuids(received) == rider.produced()
    assert stopped["acked"] == stopped["produced"] >= 3
    assert shared.messages == []
