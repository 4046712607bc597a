"""The whole loop on real servers: bikes -> mosquitto -> rule -> Kinesis -> standings -> bikes.

Every service runs as the process a user starts (``alleycat rule``, ``alleycat standings``,
``alleycat stack``, ``alleycat ride``); the tests count what reaches the stream and what the
riders are told, never how fast.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from awscrt import mqtt5

from alleycat_rider.iot.broker import port_in_use
from simulator.sinks.kinesis import list_shards
from simulator.verify.cli import ShardReader
from tests.alleycat_rider.test_agent_broker import AgentProcess, agent
from tests.servers.kinesis import KINESALITE_DIR, create_stream
from tests.servers.mosquitto import mqtt_client
from tests.servers.moto import MOTO_REGION
from tests.servers.ports import free_port, wait_for_port
from tests.servers.throttle import throttling_proxy

#: Real servers and several processes, over tens of seconds: run once, not on both builds.
pytestmark = pytest.mark.e2e

STREAM = "alleycat"


def read_stream(endpoint: str, stream: str = STREAM) -> list[dict[str, Any]]:
    """Every record of every shard, decoded."""
    client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
    try:
        reader = ShardReader(client, stream)
        shards = list_shards(client, stream, open_only=False)
        return [json.loads(r.data) for s in shards for r in reader.records(s)]
    finally:
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def standings_of(rider: AgentProcess) -> list[dict[str, Any]]:
    return rider.events("standings")


def last_with_everyone(rider: AgentProcess, riders: int) -> dict[str, Any] | None:
    full = [s for s in standings_of(rider) if s["riders"] == riders]
    return full[-1] if full else None


def start_stack(services: Any, tmp_path: Path, *extra: str) -> tuple[Any, dict[str, Any]]:
    """``alleycat stack`` on free ports; its endpoints once it is ready."""
    stack = services(
        ["stack", "--mqtt-port", str(free_port()), "--kinesis-port", str(free_port()),
         "--certs", str(tmp_path / "certs"), "--workdir", str(tmp_path / "stack"), "--json",
         "--status-interval", "0", *extra],
        "stack",
    )  # fmt: skip
    wait_until(lambda: stack.stdout_path.read_text().strip() != "", 60, "the stack")
    endpoints: dict[str, Any] = json.loads(stack.stdout_path.read_text().splitlines()[0])
    return stack, endpoints


def sees_both(rider: AgentProcess) -> Callable[[], bool]:
    return lambda: last_with_everyone(rider, 2) is not None


def verify(endpoint: str, cwd: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "alleycat", "verify", "--stream", STREAM, "--json",
         "--endpoint-url", endpoint],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def test_two_riders_through_a_stack_reach_the_stream_once_and_see_each_other(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    stack, endpoints = start_stack(services, tmp_path)
    mqtt_port = endpoints["mqtt"]["port"]
    kinesis_port = int(endpoints["kinesis"]["endpoint_url"].rsplit(":", 1)[1])
    endpoint = endpoints["kinesis"]["endpoint_url"]
    ca = endpoints["mqtt"]["ca"]

    def ride(device: str, racer: int, cadence: str, resistance: str) -> list[str]:
        files = endpoints["devices"][device]
        return [
            "--endpoint", "127.0.0.1", "--port", str(mqtt_port), "--ca", ca,
            "--cert", files["cert"], "--key", files["key"], "--client-id", device,
            "--racer-id", str(racer), "--class-id", "1", "--qos", "1",
            "--topic", f"alleycat-publish/{device}", "--spool", str(tmp_path / f"{device}.db"),
            "--sensor", "mock", "--seed", "1", "--mock-cadence", cadence,
            "--mock-resistance", resistance, "--log-format", "json", "--log-level", "debug",
        ]  # fmt: skip

    # Far apart: 101's least output (162) is above 102's greatest (93.5).
    with (
        agent(ride("bike-1", 101, "85:95", "70:80")) as fast,
        agent(ride("bike-2", 102, "40:50", "35:45")) as slow,
    ):
        for rider in (fast, slow):
            rider.wait_for("message", count=12)
            rider.wait_until(sees_both(rider), timeout=30)
        assert fast.stop() == 0 and slow.stop() == 0
        produced = fast.produced() + slow.produced()
        acked = [r.events("stopped")[0]["acked"] for r in (fast, slow)]
        ours, theirs = last_with_everyone(fast, 2), last_with_everyone(slow, 2)
    assert sum(acked) == len(produced)
    assert ours is not None and theirs is not None
    assert ours["place"] == 1 and theirs["place"] == 2
    assert ours["output"] == ours["leader_output"] > theirs["output"]

    wait_until(lambda: len(read_stream(endpoint)) >= len(produced), 30, "the stream")
    records = read_stream(endpoint)
    assert sorted({r["uuid"] for r in records}) == sorted(produced)
    report = verify(endpoint, tmp_path)
    assert report["gaps"] == 0 and report["malformed"] == 0
    assert report["messages"] == len(records)
    assert report["duplicates"] == len(records) - len(produced)
    assert stack.stop() == 0
    assert "messages in" in stack.stderr
    assert not port_in_use("127.0.0.1", mqtt_port) and not port_in_use("127.0.0.1", kinesis_port)


def test_a_stack_on_kinesalite_makes_its_stream_and_stops_what_it_started(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    (tmp_path / "node_modules").symlink_to(KINESALITE_DIR / "node_modules")
    mqtt_port, kinesis_port = free_port(), free_port()
    stack = services(
        ["stack", "--kinesis", "kinesalite", "--shards", "2", "--stream", "rides",
         "--mqtt-port", str(mqtt_port), "--kinesis-port", str(kinesis_port), "--json",
         "--certs", str(tmp_path / "certs"), "--workdir", str(tmp_path / "stack")],
        "stack",
    )  # fmt: skip
    wait_until(lambda: stack.stdout_path.read_text().strip() != "", 60, "the stack")
    endpoints = json.loads(stack.stdout_path.read_text())
    assert endpoints["kinesis"] == {
        "endpoint_url": f"http://127.0.0.1:{kinesis_port}", "server": "kinesalite",
        "stream": "rides", "region": "us-east-1",
    }  # fmt: skip
    client = boto3.client("kinesis", endpoint_url=endpoints["kinesis"]["endpoint_url"])
    try:
        assert len(list_shards(client, "rides")) == 2
    finally:
        client.close()
    assert stack.stop(signal.SIGINT) == 130  # Ctrl-C, after the final line, as shells expect
    assert "messages in" in stack.stderr
    assert not port_in_use("127.0.0.1", mqtt_port) and not port_in_use("127.0.0.1", kinesis_port)


def test_nothing_is_lost_when_the_rule_stops_and_standings_die(
    tmp_path: Path,
    services: Any,
    backend_broker: Any,
    kinesis_server: str,
    kinesis_client: Any,
    stream_name: str,
) -> None:
    create_stream(kinesis_client, stream_name, 1)
    aws = ["--stream", stream_name, "--endpoint-url", kinesis_server]

    def start_rule() -> Any:
        return services(
            ["rule", *backend_broker.options("alleycat-rule"), *aws, "--json",
             "--status-interval", "0"],
            f"rule-{time.monotonic_ns()}",
        )  # fmt: skip

    def start_standings() -> Any:
        return services(
            ["standings", *backend_broker.options("alleycat-standings"), *aws,
             "--state", str(tmp_path / "standings.db"), "--from", "trim-horizon", "--json",
             "--status-interval", "0"],
            f"standings-{time.monotonic_ns()}",
        )  # fmt: skip

    rule = start_rule()
    standings = start_standings()
    # Until the rule's first session exists, the broker keeps nothing for it.
    wait_until(lambda: "rule: alleycat-publish" in rule.stderr, 30, "the rule")
    args = backend_broker.ride_args("bike-1", 101, tmp_path / "spool.db")
    with agent(args) as rider:
        rider.wait_until(lambda: len(standings_of(rider)) >= 2, timeout=40)
        assert rule.stop() == 0
        first_rule = rule.result()
        down_from = len(rider.events("message"))
        rider.wait_for("message", count=down_from + 10)  # ten seconds with no rule
        rule = start_rule()
        standings.kill()  # kill -9: no chance to save anything on the way out
        heard = len(standings_of(rider))
        standings = start_standings()
        rider.wait_until(lambda: len(standings_of(rider)) >= heard + 2, timeout=40)
        assert rider.stop() == 0
        produced = rider.produced()

    wait_until(
        lambda: {r["uuid"] for r in read_stream(kinesis_server, stream_name)} >= set(produced),
        30,
        "records",
    )
    records = read_stream(kinesis_server, stream_name)
    assert {r["uuid"] for r in records} == set(produced)
    seconds = sorted(r["second"] for r in records)
    assert sorted(set(seconds)) == list(range(seconds[0], seconds[-1] + 1))
    # Standings, restarted on the same state, count each message once however often it is read.
    wait_until(lambda: standings.stderr.count("standings:") >= 1, 10, "standings running")
    time.sleep(2)  # a read cycle after the last record
    assert standings.stop() == 0
    report = standings.result()
    assert report["messages"] - report["duplicates"] == len(set(produced))
    assert report["records"] == len(records)
    assert rule.stop() == 0
    second_rule = rule.result()
    written = first_rule["written"] + second_rule["written"]
    assert first_rule["pending"] == 0 and second_rule["pending"] == 0
    assert first_rule["error_action"] == second_rule["error_action"] == 0
    assert written == len(records)


def test_a_throttled_stream_loses_nothing_every_message_in_the_stream_or_the_error_action(
    tmp_path: Path,
    services: Any,
    backend_broker: Any,
    kinesis_server: str,
    kinesis_client: Any,
    stream_name: str,
) -> None:
    create_stream(kinesis_client, stream_name, 1)
    errors = tmp_path / "errors.jsonl"
    with throttling_proxy(kinesis_server, records_per_second=40) as proxy:
        rule = services(
            ["rule", *backend_broker.options("alleycat-rule"), "--stream", stream_name,
             "--endpoint-url", proxy.url, "--retry-for", "1.5", "--error-action", str(errors),
             "--json", "--status-interval", "0"],
            "rule",
        )  # fmt: skip
        wait_until(lambda: "rule: alleycat-publish" in rule.stderr, 30, "the rule")
        sent: list[str] = []
        with backend_broker.client("bike-1") as bike:
            for second in range(1, 301):
                message_uuid = str(uuid.uuid4())
                message = {"uuid": message_uuid, "racerId": 101, "second": second}
                bike.publish("alleycat-publish/bike-1", json.dumps(message).encode())
                sent.append(message_uuid)

        def refused() -> list[dict[str, Any]]:
            return (
                [json.loads(line) for line in errors.read_text().splitlines()]
                if errors.exists()
                else []
            )

        wait_until(
            lambda: len(read_stream(kinesis_server, stream_name)) + len(refused()) >= len(sent),
            60,
            "all",
        )
        assert rule.stop() == 0
        counts = rule.result()
        throttled = proxy.throttled
    stored: list[str] = [r["uuid"] for r in read_stream(kinesis_server, stream_name)]
    in_error: list[str] = [
        json.loads(base64.b64decode(e["base64OriginalPayload"]))["uuid"] for e in refused()
    ]
    assert throttled > 0 and counts["retried"] > 0
    assert counts["written"] > 0 and counts["error_action"] > 0
    assert counts["received"] == len(sent) == counts["written"] + counts["error_action"]
    assert counts["pending"] == 0
    assert len(stored) == counts["written"] and len(in_error) == counts["error_action"]
    assert sorted(stored + in_error) == sorted(sent)
    assert {e["failures"][0]["errorMessage"] for e in refused()} == {
        "ProvisionedThroughputExceededException"
    }


@pytest.mark.parametrize("racers_from", ["file", "iot"])
def test_a_bike_riding_as_another_is_refused_by_the_broker_or_rejected_by_standings(
    tmp_path: Path,
    services: Any,
    backend_broker: Any,
    stream_name: str,
    racers_from: str,
    request: pytest.FixtureRequest,
) -> None:
    racers = {"bike-1": 101, "bike-2": 102}
    if racers_from == "file":  # a client map file, kinesalite
        endpoint = request.getfixturevalue("kinesis_server")
        client_map = tmp_path / "bikes.json"
        client_map.write_text(json.dumps(racers))
        map_args = ["--client-map", str(client_map)]
    else:  # things with a racerId attribute, as `provision --racer-id` leaves them; moto
        endpoint = request.getfixturevalue("moto_endpoint")
        iot = boto3.client("iot", endpoint_url=endpoint, region_name=MOTO_REGION)
        for thing, racer in racers.items():
            iot.create_thing(
                thingName=thing, attributePayload={"attributes": {"racerId": str(racer)}}
            )
        iot.create_thing(thingName="bike-3")  # rides as no one
        map_args = ["--client-map-from-iot"]
    create_stream(
        boto3.client("kinesis", endpoint_url=endpoint, region_name=MOTO_REGION), stream_name, 1
    )
    aws = ["--stream", stream_name, "--endpoint-url", endpoint]
    rule = services(
        ["rule", *backend_broker.options("alleycat-rule"), *aws, "--stamp-client-id", "--json",
         "--status-interval", "0"],
        "rule",
    )  # fmt: skip
    standings = services(
        ["standings", *backend_broker.options("alleycat-standings"), *aws, *map_args,
         "--from", "trim-horizon", "--json", "--status-interval", "0.2"],
        "standings",
    )  # fmt: skip
    wait_until(lambda: "rule: alleycat-publish" in rule.stderr, 30, "the rule")
    wait_until(lambda: "standings: stream" in standings.stderr, 30, "standings")

    def ride_message(racer: int, cadence: float) -> bytes:
        now_ms = int(time.time() * 1000)
        return json.dumps({
            "uuid": str(uuid.uuid4()), "event": "update", "deviceTimestamp": now_ms,
            "second": 1, "raceId": now_ms // 300_000, "name": "x",
            "racerId": racer, "classId": 1, "cadence": cadence, "resistance": 50,
        }).encode()  # fmt: skip

    with (
        backend_broker.client("bike-1") as honest,
        backend_broker.client("bike-2") as cheat,
    ):
        honest.subscribe("alleycat-subscribe", qos=0)
        honest.publish("alleycat-publish/bike-1", ride_message(101, 60))
        cheat.publish("alleycat-publish/bike-2", ride_message(101, 120))  # as racer 101
        # bike-1's own topic is not bike-2's to publish on: the broker refuses it.
        refused = cheat._client.publish(
            mqtt5.PublishPacket(
                topic="alleycat-publish/bike-1",
                payload=ride_message(101, 130),
                qos=mqtt5.QoS.AT_LEAST_ONCE,
            )
        ).result(5)
        assert refused.puback.reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
        wait_until(lambda: bool(honest.messages), 20, "standings")
        wait_until(lambda: "messages 2," in standings.stderr, 20, "both messages read")
        wait_for_port(backend_broker.port)
    assert standings.stop(signal.SIGTERM) == 0
    report = standings.result()
    assert report["rejected"] == 1 and report["messages"] == 2
    assert "sent by 'bike-2' (racer 102)" in report["rejected_examples"][0]
    results = json.loads(json.loads(honest.messages[-1])["results"])
    assert results == {"101": round((60 + 35) * (50 + 65) / 100, 4)}
    assert rule.stop() == 0
    assert rule.result()["written"] == 2


def test_200_mqtt_riders_through_a_stack_reach_the_stream_with_standings_for_every_class(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    stack, endpoints = start_stack(services, tmp_path)
    mqtt_port = endpoints["mqtt"]["port"]
    endpoint = endpoints["kinesis"]["endpoint_url"]
    ca, fleet, bike = endpoints["mqtt"]["ca"], endpoints["fleet"], endpoints["devices"]["bike-1"]
    with mqtt_client(
        host="127.0.0.1", port=mqtt_port, ca=Path(ca), cert=Path(bike["cert"]),
        key=Path(bike["key"]), client_id="bike-1",
    ) as watcher:  # fmt: skip
        watcher.subscribe("alleycat-subscribe", qos=0)
        completed = subprocess.run(
            [sys.executable, "-m", "alleycat", "simulate", "--via", "mqtt", "--riders", "200",
             "--duration", "30", "--mqtt-port", str(mqtt_port), "--ca", ca, "--cert",
             fleet["cert"], "--key", fleet["key"], "--json", "--seed", "5"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-2000:]
        summary = json.loads(completed.stdout)
        assert summary["generated"] == summary["acked"] == 6000
        wait_until(lambda: len(read_stream(endpoint)) >= 6000, 60, "the stream")
        time.sleep(2)  # the last standings of the run
        results = [json.loads(payload) for payload in watcher.messages]
    records = read_stream(endpoint)
    assert len({r["uuid"] for r in records}) == 6000
    report = verify(endpoint, tmp_path)
    assert report["gaps"] == 0 and report["malformed"] == 0 and report["unique"] == 6000
    assert {int(r["classId"]) for r in results} == {1, 2, 3, 4, 5, 6}
    riders = {racer for r in results for racer in json.loads(r["results"])}
    assert riders == {str(100 + i) for i in range(200)}
    assert stack.stop() == 0
