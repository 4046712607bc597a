"""The fleet on Locust's real runners, into kinesalite: what the master counts is in the stream.

Each test starts ``alleycat locust`` processes (Locust's ``--processes``, or a master and two
workers started apart, as on several machines), bounded by ``-t``; every process, and every
child ``--processes`` forks, is killed when the test ends, whatever happened.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.servers.kinesis import create_stream
from tests.servers.ports import free_port
from tests.servers.throttle import throttling_proxy
from tests.simulator.distributed.locust_runs import (
    fleet_args,
    locust_processes,
    locust_rows,
    read_summary,
    verify_json,
)

pytestmark = pytest.mark.e2e


def assert_delivered_is_in_the_stream(summary, report):
    assert summary["generated"] > 0
    assert summary["generated"] == summary["delivered"] + summary["dropped"] + summary["lost"]
    assert report["messages"] == report["unique"] == summary["delivered"]
    assert report["duplicates"] == 0
    assert report["gaps"] == 0
    assert report["malformed"] == 0


def test_processes_deliver_every_counted_record_with_unique_riders(
    kinesis_server, kinesis_client, stream_name, tmp_path: Path
):
    create_stream(kinesis_client, stream_name, 4)
    summary_file = tmp_path / "summary.json"
    with locust_processes(tmp_path) as locust:
        run = locust.start(
            "local",
            *("--headless", "--processes", "2", "-u", "400", "-r", "400", "-t", "12s"),
            *fleet_args(kinesis_server, stream_name, "--partition-key", "balanced"),
            *("--summary-json", str(summary_file), "--seed", "7"),
        )
        assert locust.wait(run, "local") == 0, locust.output("local")[-3000:]

    summary = read_summary(summary_file)
    report = verify_json(kinesis_server, stream_name, "--partition-key", "balanced")
    assert_delivered_is_in_the_stream(summary, report)
    assert summary["riders"] == 400
    assert sorted(w["worker_index"] for w in summary["workers"]) == [0, 1]
    assert all(w["finished"] and w["generated"] > 0 for w in summary["workers"])
    # Racer ids dealt by worker index: 400 distinct riders, balanced keys on their shards.
    assert sum(race["riders"] for race in report["races"]) == 400
    assert report["off_shard"] == 0


def test_a_master_and_two_workers_started_apart_give_the_same(
    kinesis_server, kinesis_client, stream_name, tmp_path: Path
):
    create_stream(kinesis_client, stream_name, 2)
    port = free_port()
    summary_file = tmp_path / "summary.json"
    with locust_processes(tmp_path) as locust:
        master = locust.start(
            "master",
            *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            *("--headless", "--expect-workers", "2", "-u", "300", "-r", "300", "-t", "10s"),
            *fleet_args(kinesis_server, stream_name),
            *("--summary-json", str(summary_file)),
        )
        for name in ("worker-a", "worker-b"):
            locust.start(name, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port))
        assert locust.wait(master, "master") == 0, locust.output("master")[-3000:]

    summary = read_summary(summary_file)
    assert_delivered_is_in_the_stream(summary, verify_json(kinesis_server, stream_name))
    assert summary["riders"] == 300
    assert [w["finished"] for w in summary["workers"]] == [True, True]


def test_a_one_shard_stream_under_too_much_load_throttles_and_drops_nothing(
    kinesis_server, kinesis_client, stream_name, tmp_path: Path
):
    create_stream(kinesis_client, stream_name, 1)
    summary_file, stats_file = tmp_path / "summary.json", tmp_path / "stats"
    with throttling_proxy(kinesis_server, records_per_second=250) as proxy:
        with locust_processes(tmp_path) as locust:
            run = locust.start(
                "local",
                *("--headless", "-u", "500", "-r", "500", "-t", "8s"),
                *fleet_args(proxy.url, stream_name, "--max-in-flight", "1"),
                *(
                    "--summary-json",
                    str(summary_file),
                    "--json-file",
                    str(stats_file),
                ),  # Locust adds .json
            )
            locust.wait(run, "local")
        proxy_throttled = proxy.throttled

    summary = read_summary(summary_file)
    assert summary["throttled"] > 0
    assert summary["throttled"] == proxy_throttled
    assert summary["retries"] >= summary["throttled"]
    assert summary["dropped"] == 0
    assert_delivered_is_in_the_stream(summary, verify_json(kinesis_server, stream_name))
    rows = locust_rows(stats_file)
    throttled_row = rows[("PutRecords entry", "throttled")]
    assert throttled_row["num_failures"] == summary["throttled"]
    assert rows[("PutRecords", stream_name)]["num_requests"] == summary["batches"]


def test_a_worker_that_dies_is_reported_with_what_it_held_and_the_other_goes_on(
    kinesis_server, kinesis_client, stream_name, tmp_path: Path
):
    create_stream(kinesis_client, stream_name, 2)
    port = free_port()
    summary_file = tmp_path / "summary.json"
    with locust_processes(tmp_path) as locust:
        master = locust.start(
            "master",
            *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            *("--headless", "--expect-workers", "2", "-u", "200", "-r", "200", "-t", "16s"),
            *fleet_args(kinesis_server, stream_name, "--flush-interval", "5"),
            *("--summary-json", str(summary_file)),
        )
        doomed = locust.start(
            "doomed", "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)
        )
        locust.start(
            "survivor", "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)
        )
        deadline = time.monotonic() + 30
        while "Rider" not in locust.output("master") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # riding, with a report to the master behind it
        doomed.send_signal(signal.SIGKILL)
        locust.wait(master, "master")
        said = locust.output("master")

    summary = read_summary(summary_file)
    finished = {w["finished"]: w for w in summary["workers"]}
    assert set(finished) == {True, False}
    dead, alive = finished[False], finished[True]
    assert "is missing" in said
    assert f"{dead['lost']:,} records it held are lost" in said
    assert dead["lost"] > 0
    assert summary["lost"] == dead["lost"]
    assert alive["generated"] == alive["delivered"] and alive["lost"] == 0
    assert summary["generated"] == summary["delivered"] + summary["dropped"] + summary["lost"]
