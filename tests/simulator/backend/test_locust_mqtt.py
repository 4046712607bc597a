"""``alleycat locust --via mqtt`` through ``alleycat stack``: the MQTT fleet on Locust's runners.

Each Locust worker (a gevent process) runs ``simulate --via mqtt``'s fleet in a native thread of
its own; what the master counts as acknowledged must be in the stream, once, with no gaps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.servers.ports import free_port
from tests.simulator.backend.test_loop import STREAM, read_stream, start_stack, verify, wait_until
from tests.simulator.distributed.locust_runs import (
    locust_processes,
    locust_rows,
    master_and_two_workers,
    read_summary,
)

pytestmark = pytest.mark.e2e

RIDERS = 60


def mqtt_args(endpoints: dict[str, Any]) -> list[str]:
    fleet = endpoints["fleet"]
    return [
        "--via", "mqtt", "--mqtt-port", str(endpoints["mqtt"]["port"]),
        "--ca", endpoints["mqtt"]["ca"], "--cert", fleet["cert"], "--key", fleet["key"],
        "--seed", "3",
    ]  # fmt: skip


def assert_acknowledged_is_in_the_stream(summary: dict[str, Any], endpoint: str, cwd: Path):
    assert summary["generated"] > RIDERS
    assert summary["connects"] == summary["riders"] == RIDERS
    assert summary["acked"] == summary["generated"]  # every message acknowledged
    assert summary["dropped"] == summary["in_flight"] == summary["held"] == summary["lost"] == 0
    assert [w["finished"] for w in summary["workers"]] == [True, True]
    assert sum(w["acked"] for w in summary["workers"]) == summary["acked"]
    assert all(w["riders"] > 0 for w in summary["workers"])
    wait_until(lambda: len(read_stream(endpoint)) >= summary["acked"], 60, "the stream")
    report = verify(endpoint, cwd)
    assert report["messages"] == report["unique"] == summary["acked"]
    assert report["gaps"] == 0 and report["duplicates"] == 0 and report["malformed"] == 0
    # Racer ids dealt by worker index: 60 distinct riders.
    assert sum(race["riders"] for race in report["races"]) == RIDERS


def test_two_processes_of_mqtt_riders_through_a_stack(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    stack, endpoints = start_stack(services, tmp_path)
    summary_file, stats = tmp_path / "summary.json", tmp_path / "stats"
    port = free_port()
    with locust_processes(tmp_path) as locust:
        run = locust.start(
            "local",
            *("--headless", "--processes", "2", "-u", str(RIDERS), "-r", "60", "-t", "12s"),
            # A port of its own: no other Locust run on this machine meets its workers.
            *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            *("--master-host", "127.0.0.1", "--master-port", str(port)),
            *mqtt_args(endpoints),
            *("--summary-json", str(summary_file), "--json-file", str(stats)),
        )
        assert locust.wait(run, "local") == 0, locust.output("local")[-3000:]
    summary = read_summary(summary_file)
    assert summary["via"] == "mqtt" and summary["qos"] == 1
    assert_acknowledged_is_in_the_stream(summary, endpoints["kinesis"]["endpoint_url"], tmp_path)
    rows = locust_rows(stats)
    assert rows[("CONNECT", "connect")]["num_requests"] == RIDERS
    assert rows[("CONNECT", "connect")]["num_failures"] == 0
    publish = rows[("PUBLISH", "alleycat-publish")]
    assert publish["num_requests"] == summary["acked"] and publish["num_failures"] == 0
    assert stack.stop() == 0


def test_a_master_and_two_mqtt_workers_started_apart_through_a_stack(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    stack, endpoints = start_stack(services, tmp_path)
    port = free_port()
    summary_file = tmp_path / "summary.json"
    with locust_processes(tmp_path) as locust:
        master = master_and_two_workers(
            locust, port, *("-u", str(RIDERS), "-r", "60", "-t", "10s"), *mqtt_args(endpoints),
            *("--summary-json", str(summary_file)),
        )  # fmt: skip
        assert locust.wait(master, "master") == 0, locust.output("master")[-3000:]
    summary = read_summary(summary_file)
    assert_acknowledged_is_in_the_stream(summary, endpoints["kinesis"]["endpoint_url"], tmp_path)
    assert json.loads(summary_file.read_text())["per_connection_limit"] == 100
    assert STREAM
    assert stack.stop() == 0
