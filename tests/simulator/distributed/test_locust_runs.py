"""The fleet on Locust's real runners, into kinesalite: what the master counts is in the stream.

Each test starts ``alleycat locust`` processes (Locust's ``--processes``, or a master and two
workers started apart, as on several machines), bounded by ``-t``; every process, and every
child ``--processes`` forks, is killed when the test ends, whatever happened.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.servers.kinesis import create_stream
from tests.servers.ports import free_port, wait_for_port
from tests.servers.throttle import throttling_proxy
from tests.simulator.distributed.locust_runs import (
    fleet_args,
    locust_processes,
    locust_rows,
    read_summary,
    verify_json,
)

pytestmark = pytest.mark.e2e


def http_json(url: str, form: dict[str, str] | None = None) -> Any:
    """GET ``url``, or POST ``form`` to it; its JSON answer (Locust's web UI, on 127.0.0.1)."""
    data = None if form is None else urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(url, data=data, timeout=10) as answer:
        body = answer.read()
    return json.loads(body) if body else None


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
    port = free_port()
    with locust_processes(tmp_path) as locust:
        run = locust.start(
            "local",
            *("--headless", "--processes", "2", "-u", "400", "-r", "400", "-t", "12s"),
            # A port of its own: no other Locust run on this machine meets its workers.
            *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)),
            *("--master-host", "127.0.0.1", "--master-port", str(port)),
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
    summary_file = tmp_path / "summary.json"
    with locust_processes(tmp_path) as locust:
        master = locust.master_and_workers(
            *("-u", "300", "-r", "300", "-t", "10s"),
            *fleet_args(kinesis_server, stream_name),
            *("--summary-json", str(summary_file)),
        )
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


def test_the_web_ui_starts_a_test_with_our_options_from_its_form_and_stops_it(
    kinesis_server, kinesis_client, stream_name, tmp_path: Path
):
    """Locust's web UI, as a user drives it: the stream and endpoint typed into its form."""
    create_stream(kinesis_client, stream_name, 2)
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    summary_file = tmp_path / "summary.json"
    with locust_processes(tmp_path) as locust:
        web = locust.start(
            "web",
            *("--web-host", "127.0.0.1", "--web-port", str(port)),
            *("--summary-json", str(summary_file)),
        )
        wait_for_port(port, timeout=30)
        form = {
            "user_count": "50",
            "spawn_rate": "50",
            "host": "",
            "stream": stream_name,
            "endpoint_url": kinesis_server,
            "partition_key": "racer",
        }
        started = http_json(f"{ui}/swarm", form)
        assert started["success"], started
        rows: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = http_json(f"{ui}/stats/requests")
            rows = {row["name"]: row for row in stats["stats"]}
            if rows.get(stream_name, {}).get("num_requests", 0) >= 3:
                break
            time.sleep(0.5)
        assert rows[stream_name]["num_requests"] >= 3, rows
        assert rows[stream_name]["method"] == "PutRecords"
        http_json(f"{ui}/stop", {})
        deadline = time.monotonic() + 30
        while not summary_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert summary_file.exists(), locust.output("web")[-3000:]
        web.send_signal(signal.SIGTERM)
        locust.wait(web, "web", timeout=30)

    summary = read_summary(summary_file)
    assert summary["riders"] == 50
    assert_delivered_is_in_the_stream(summary, verify_json(kinesis_server, stream_name))
