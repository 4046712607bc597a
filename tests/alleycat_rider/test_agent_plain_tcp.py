"""Plain TCP MQTT: allowed to a broker on this machine, refused elsewhere without --insecure."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alleycat_rider.test_agent_broker import agent
from tests.servers.ports import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[int]:
    """mosquitto on 127.0.0.1 without TLS: what a local test broker often is."""
    port = free_port()
    config = tmp_path / "plain.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nuser root\n"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_plain_tcp_to_a_loopback_broker_publishes_and_is_acknowledged(
    plain_broker: int, tmp_path: Path
) -> None:
    args = [
        "--endpoint", "127.0.0.1", "--port", str(plain_broker), "--client-id", "bike-9",
        "--racer-id", "9", "--qos", "1", "--spool", str(tmp_path / "spool.db"),
        "--sensor", "mock", "--log-format", "json", "--log-level", "debug",
    ]  # fmt: skip
    with agent(args) as rider:
        rider.wait_for("connected")
        rider.wait_until(lambda: len(rider.events("message")) >= 3)
        assert rider.stop() == 0
        assert rider.events("starting")[0]["tls"] is False
        stopped = rider.events("stopped")[0]
    # Every PUBACK came from the real broker over plain TCP.
    assert stopped["acked"] == stopped["produced"] >= 3
    assert stopped["dropped"] == 0
    # The sensor's counts close the summary: the mock rider stepped as the ride went on, cleanly.
    # Its steps follow the wall clock between the first read and the last (one a whole second),
    # while a message is made ahead of its deadline and the final one at the stop: on a busy
    # machine reads bunch up, so the steps may trail the messages by more than one, never lead
    # them by more than the first step.
    assert 2 <= stopped["sensor_frames"] <= stopped["produced"] + 1
    assert stopped["sensor_malformed"] == stopped["sensor_dropouts"] == 0


def test_plain_tcp_to_a_remote_broker_needs_insecure() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "alleycat", "ride", "--endpoint", "broker.example",
         "--racer-id", "9", "--log-format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode in (1, 2)
    assert "--insecure" in run.stderr and "--cert" in run.stderr
    assert "Traceback" not in run.stderr
