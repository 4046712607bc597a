"""A Locust worker's MQTT riders on a real mosquitto (mutual TLS): users that stop, a fleet that
fails. The worker's ride is driven as Locust's worker drives it: users join and leave from
greenlets, the fleet rides on its own native thread."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import psutil
import pytest

from simulator.distributed.mqtt_worker import MqttWorkerRide
from simulator.distributed.options import RunOptions, add_arguments
from simulator.mqtt.fleet import DRAIN_SECONDS, LEFT_UNSENT
from tests.servers.mosquitto import RunningBroker
from tests.servers.ports import free_port
from tests.simulator.distributed.locust_runs import locust_processes, locust_rows, read_summary

#: Real servers over seconds: run once, not on both builds.
pytestmark = pytest.mark.e2e


def worker_options(broker: RunningBroker, *extra: str) -> RunOptions:
    """``alleycat locust --via mqtt``'s options for a worker riding to ``broker``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cert, key = broker.pki.client("bike-3")
    parsed = parser.parse_args(
        [
            "--via", "mqtt", "--mqtt-port", str(broker.port), "--ca", str(broker.pki.ca_cert),
            "--cert", str(cert), "--key", str(key), "--seed", "3", *extra,
        ]
    )  # fmt: skip
    return RunOptions.from_parsed(parsed)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait (yielding to gevent, as a worker's greenlets do) until ``condition`` holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f} s"
        gevent.sleep(0.05)


def racers(payloads: list[bytes]) -> Counter[int]:
    """Messages received per racer id."""
    return Counter(json.loads(p)["racerId"] for p in payloads)


def adds_up(s: dict[str, Any]) -> bool:
    accounted = s["acked"] + s["sent_unacknowledged"] + s["dropped"] + s["in_flight"] + s["held"]
    return bool(s["generated"] == accounted)


def test_a_stopped_users_riders_send_nothing_more_and_disconnect(
    mqtt_broker: RunningBroker,
) -> None:
    rows: list[dict[str, Any]] = []
    ride = MqttWorkerRide(worker_options(mqtt_broker), 0, lambda **row: rows.append(row))
    with mqtt_broker.subscriber("alleycat-publish") as subscriber:
        ride.start()
        groups = [ride.join() for _ in range(3)]  # racers 100, 101, 102
        wait_for(lambda: ride.fleet.counts.acked >= 6, 15, "messages from three riders")
        ride.leave(groups[1])
        wait_for(lambda: ride.fleet.counts.left == 1, 15, "rider seen off")
        gevent.sleep(0.5)  # anything of racer 101's still on its way to the subscriber
        heard_at_leave = racers(subscriber.messages)[101]
        gevent.sleep(2.5)  # the others ride on
        report = ride.finish()
        wait_for(lambda: len(subscriber.messages) >= report["summary"]["acked"], 10, "messages")
    summary = report["summary"]
    heard = racers(subscriber.messages)
    assert heard[101] == heard_at_leave > 0  # nothing more from the stopped user's rider
    assert heard[100] >= heard_at_leave + 2 and heard[102] >= heard_at_leave + 2
    assert sum(heard.values()) == summary["acked"] == summary["generated"]  # each acked, once
    assert summary["left"] == 1 and summary["dropped"] == 0 and adds_up(summary)
    assert report["final"] and report["error"] is None
    # It said goodbye (a DISCONNECT: "disconnected", not "closed its connection") while the
    # others were still connected: theirs come at the end of the run.
    log = mqtt_broker.log_path.read_text()
    goodbyes = [m.group(1) for m in re.finditer(r"Client (alleycat-\d+) disconnected\.", log)]
    assert goodbyes[0] == "alleycat-101" and sorted(goodbyes) == [
        "alleycat-100", "alleycat-101", "alleycat-102",
    ]  # fmt: skip
    publishes = [row for row in rows if row["request_type"] == "PUBLISH"]
    assert len(publishes) == summary["acked"] and not any(r["exception"] for r in rows)


def test_users_that_stop_with_the_test_are_left_to_its_drain_not_seen_off_one_by_one(
    mqtt_broker: RunningBroker,
) -> None:
    ride = MqttWorkerRide(worker_options(mqtt_broker), 0, lambda **row: None)
    ride.start()
    groups = [ride.join() for _ in range(3)]
    wait_for(lambda: ride.fleet.counts.acked >= 6, 15, "messages from three riders")
    ride.ending()  # Locust's test_stopping: the users stop next, with the test
    for group in groups:
        ride.leave(group)
    gevent.sleep(0.5)  # fifty passes of the fleet's timer
    assert ride.fleet.counts.left == 0
    summary = ride.finish()["summary"]
    assert summary["left"] == 0 and summary["acked"] == summary["generated"] and adds_up(summary)
    assert mqtt_broker.log_path.read_text().count("disconnected.") == 3  # the drain's goodbyes


def leaving_while_offline(broker: RunningBroker, rows: list[dict[str, Any]]) -> MqttWorkerRide:
    """A worker's one user, whose rider rode, lost its broker and held messages, then stopped."""
    ride = MqttWorkerRide(worker_options(broker), 0, lambda **row: rows.append(row))
    ride.start()
    group = ride.join()
    wait_for(lambda: ride.fleet.counts.acked >= 2, 15, "messages")
    broker.stop()
    wait_for(lambda: ride.fleet.held >= 2, 10, "messages held while offline")
    ride.leave(group)
    return ride


def test_a_user_that_stops_while_its_rider_is_offline_delivers_what_it_held_then_leaves(
    mqtt_broker: RunningBroker,
) -> None:
    ride = leaving_while_offline(mqtt_broker, [])
    gevent.sleep(1.0)
    assert ride.fleet.counts.left == 0  # it waits to deliver what it holds
    mqtt_broker.start()
    wait_for(lambda: ride.fleet.counts.left == 1, 20, "rider seen off")
    report = ride.finish()
    summary = report["summary"]
    assert summary["held"] == summary["in_flight"] == summary["dropped"] == 0
    assert summary["acked"] == summary["generated"] and summary["resent"] >= 2
    assert summary["left"] == 1 and summary["reconnects"] == 1 and adds_up(summary)
    assert "Client alleycat-100 disconnected." in mqtt_broker.log_path.read_text()


def test_what_a_stopped_users_rider_cannot_deliver_in_time_is_dropped_and_counted(
    mqtt_broker: RunningBroker,
) -> None:
    rows: list[dict[str, Any]] = []
    ride = leaving_while_offline(mqtt_broker, rows)
    held = ride.fleet.held
    wait_for(lambda: ride.fleet.counts.left == 1, DRAIN_SECONDS + 5, "rider seen off")
    report = ride.finish()
    summary = report["summary"]
    assert summary["dropped"] >= held and summary["held"] == summary["in_flight"] == 0
    assert summary["left"] == 1 and adds_up(summary)
    drops = [r for r in rows if r["request_type"] == "message" and r["name"] == "dropped"]
    assert len(drops) == summary["dropped"]
    assert {str(r["exception"]) for r in drops} == {LEFT_UNSENT}


def test_a_fleet_that_stops_on_a_defect_closes_its_sockets_says_so_and_still_adds_up(
    mqtt_broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    rows: list[dict[str, Any]] = []
    ended: list[str] = []
    ride = MqttWorkerRide(
        worker_options(mqtt_broker), 0, lambda **row: rows.append(row), on_failure=ended.append
    )
    ride.start()
    for _ in range(3):
        ride.join()
    wait_for(lambda: ride.fleet.counts.acked >= 6, 15, "messages from three riders")
    on_tick = ride.fleet.on_tick

    def defect() -> None:
        assert on_tick is not None
        on_tick()
        raise RuntimeError("a defect\nin two lines")

    ride.fleet.on_tick = defect  # the fleet's thread raises on its next pass
    wait_for(lambda: bool(ended), 5, "the test told to end")
    said = [r.getMessage() for r in caplog.records if r.name == "alleycat"]
    assert said == [
        "alleycat: the MQTT fleet stopped on a defect: RuntimeError('a defect\\nin two lines')"
    ]
    assert ended == [said[0].removeprefix("alleycat: ")]
    failures = [r for r in rows if r["request_type"] == "MQTT fleet"]
    assert [str(r["exception"]) for r in failures] == ended
    # Its sockets are closed: the broker saw each connection close (without a goodbye).
    wait_for(
        lambda: mqtt_broker.log_path.read_text().count("closed its connection") >= 3,
        10,
        "connections closed",
    )
    open_to_broker = [
        c for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == mqtt_broker.port and c.status == "ESTABLISHED"
    ]  # fmt: skip
    assert open_to_broker == []
    started = time.monotonic()
    report = ride.finish()
    assert time.monotonic() - started < 2  # no wait for a drain that will never come
    summary = report["summary"]
    assert report["final"] and report["error"] == ended[0]
    assert summary["acked"] >= 6 and adds_up(summary)
    assert len(failures) == 1  # said once


#: A locustfile loaded beside ours (as a load shape would be): the fleet raises once 8 messages
#: are acknowledged, a defect in a real ``alleycat locust`` worker.
DEFECT = """
from simulator.mqtt.fleet import MqttFleet

_step = MqttFleet.step


def step(self):
    if self.counts.acked >= 8:
        raise RuntimeError("a defect")
    _step(self)


MqttFleet.step = step
"""


def test_a_worker_whose_fleet_fails_ends_the_test_with_its_counts_summed(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    (tmp_path / "defect.py").write_text(DEFECT)
    cert, key = mqtt_broker.pki.client("bike-3")
    port = free_port()
    summary_file, stats = tmp_path / "summary.json", tmp_path / "stats"
    with locust_processes(tmp_path) as locust:
        started = time.monotonic()
        run = locust.start(
            "local",
            *("-f", str(tmp_path / "defect.py"), "--headless", "--processes", "1"),
            *("-u", "4", "-r", "4", "-t", "60s", "--via", "mqtt"),
            *("--mqtt-port", str(mqtt_broker.port), "--ca", str(mqtt_broker.pki.ca_cert)),
            *("--cert", str(cert), "--key", str(key)),
            *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            *("--master-host", "127.0.0.1", "--master-port", str(port)),
            *("--summary-json", str(summary_file), "--json-file", str(stats)),
        )
        assert locust.wait(run, "local") == 1, locust.output("local")[-3000:]
        took = time.monotonic() - started
    said = locust.output("local")
    assert took < 40  # ended by the failure, not by its 60 s
    lines = [line for line in said.splitlines() if "stopped on a defect" in line]
    assert any(
        line.endswith("alleycat: the MQTT fleet stopped on a defect: RuntimeError('a defect')")
        for line in lines
    ), said[-3000:]
    summary = read_summary(summary_file)
    assert summary["error"] == "the MQTT fleet stopped on a defect: RuntimeError('a defect')"
    assert summary["acked"] >= 8 and adds_up(summary) and summary["lost"] == 0
    rows = locust_rows(stats)
    assert rows[("MQTT fleet", "stopped")]["num_failures"] == 1
    assert rows[("PUBLISH", "alleycat-publish")]["num_requests"] == summary["acked"]
