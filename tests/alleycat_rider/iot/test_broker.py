"""The local mutual-TLS broker: who gets in, what goes through, and surviving an outage."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from alleycat.cli import cli
from alleycat_rider.iot import broker as broker_module
from alleycat_rider.iot.broker import (
    MosquittoBroker,
    MosquittoNotFound,
    mosquitto_config,
    port_in_use,
)
from alleycat_rider.iot.devcerts import make_dev_pki
from tests.servers.mosquitto import RunningBroker, TestPki, connect_outcome, mqtt_client
from tests.servers.ports import free_port


def test_device_with_a_dev_certificate_round_trips_a_message(mqtt_broker: RunningBroker) -> None:
    with mqtt_broker.subscriber("alleycat/ride/#") as subscriber:
        with mqtt_broker.client("bike-1") as bike:
            bike.publish("alleycat/ride/bike-1", b'{"cadence":61.5}')
        assert subscriber.wait_for(1) == [b'{"cadence":61.5}']
        assert subscriber.topics == ["alleycat/ride/bike-1"]


def test_certificate_from_another_ca_is_refused(mqtt_broker: RunningBroker) -> None:
    cert, key = mqtt_broker.pki.foreign_client
    outcome = connect_outcome(
        mqtt_broker.host, mqtt_broker.port, mqtt_broker.pki.ca_cert, cert, key, "intruder"
    )
    assert outcome != "connected"
    assert "TLS" in outcome


def test_broker_restarted_on_the_same_port_accepts_devices_again(
    mqtt_broker: RunningBroker,
) -> None:
    port = mqtt_broker.port
    mqtt_broker.stop()
    assert not mqtt_broker.running
    mqtt_broker.start()
    assert mqtt_broker.port == port
    with mqtt_broker.client("bike-2"):
        pass


def test_missing_mosquitto_says_how_to_install_it(
    mqtt_pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(broker_module, "MOSQUITTO_LOCATIONS", ())
    with pytest.raises(MosquittoNotFound, match=r"sudo apt-get install mosquitto"):
        MosquittoBroker(mqtt_pki, port=1).start()


def test_config_requires_a_client_certificate_and_uses_it_as_identity(mqtt_pki: TestPki) -> None:
    lines = mosquitto_config(mqtt_pki, port=18883).splitlines()
    assert "listener 18883 127.0.0.1" in lines
    assert "require_certificate true" in lines
    assert "use_identity_as_username true" in lines
    assert "allow_anonymous false" in lines


def _wait_until_listening(port: int, process: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not port_in_use("127.0.0.1", port):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"alleycat broker did not listen on {port}"
        time.sleep(0.05)


def _printed_ride_command(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    for _ in range(10):
        words = shlex.split(process.stdout.readline())
        if words[:2] == ["alleycat", "ride"]:
            return words
    raise AssertionError("alleycat broker printed no `alleycat ride` command")


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _stop(process: subprocess.Popen[Any], stop_signal: signal.Signals) -> None:
    process.send_signal(stop_signal)
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


@contextmanager
def _alleycat_broker(
    tmp_path: Path, certs: Path, port: int, stop_signal: signal.Signals = signal.SIGINT
) -> Iterator[list[str]]:
    """Run `alleycat broker`; yield the ride command it prints; stop it and check it stopped."""
    with (tmp_path / "broker.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "alleycat", "broker", "--dir", str(certs), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            _wait_until_listening(port, process)
            yield _printed_ride_command(process)
        finally:
            _stop(process, stop_signal)
    # Ctrl-C exits 130, as shells expect; SIGTERM, a service stopped, 0.
    assert process.returncode == (130 if stop_signal == signal.SIGINT else 0)
    assert not port_in_use("127.0.0.1", port), "mosquitto outlived alleycat broker"
    assert "Broker stopped." in (tmp_path / "broker.log").read_text()


def test_dev_certificates_let_alleycat_ride_publish_through_alleycat_broker(
    tmp_path: Path,
) -> None:
    port = free_port()
    certs = tmp_path / "certs" / "dev"
    subprocess.run(
        [sys.executable, "-m", "alleycat", "certs", "dev", "--dir", str(certs)]
        + ["--client-id", "bike-1", "--client-id", "watcher"],
        check=True,
        capture_output=True,
    )
    pki = make_dev_pki(certs, ["watcher"])
    watcher_cert, watcher_key = pki.client("watcher")
    with _alleycat_broker(tmp_path, certs, port) as ride:
        assert int(_option(ride, "--port")) == port
        host = _option(ride, "--endpoint")
        with mqtt_client(
            host=host,
            port=port,
            ca=pki.ca_cert,
            cert=watcher_cert,
            key=watcher_key,
            client_id="watcher",
        ) as watcher:
            watcher.subscribe("alleycat-publish")
            with (tmp_path / "ride.log").open("w") as ride_log:
                rider = subprocess.Popen(
                    [sys.executable, "-m", "alleycat", *ride[1:]]
                    + ["--spool", str(tmp_path / "spool.sqlite3")]
                    + ["--log-format", "json"],
                    stdout=ride_log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    messages = watcher.wait_for(1, timeout=15)
                finally:
                    _stop(rider, signal.SIGINT)
        # Ctrl-C ends a ride with 130, as shells expect.
        assert rider.returncode == 130, (tmp_path / "ride.log").read_text()
        assert messages, (tmp_path / "ride.log").read_text()
        assert json.loads(messages[0])["racerId"] == 100  # the printed command runs as it is

        intruder_cert, intruder_key = make_dev_pki(
            tmp_path / "foreign", ["intruder"], ca_name="Some other CA"
        ).client("intruder")
        refused = connect_outcome(host, port, pki.ca_cert, intruder_cert, intruder_key, "intruder")
        assert refused != "connected"


def test_alleycat_broker_stops_mosquitto_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with _alleycat_broker(tmp_path, tmp_path / "dev", port, signal.SIGTERM) as ride:
        assert _option(ride, "--client-id") == "bike-1"
        assert (tmp_path / "dev" / "devices" / "bike-1.key").is_file()


def test_alleycat_broker_on_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["broker", "--dir", str(tmp_path), "--port", str(port)], catch_exceptions=False
        )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use: stop what listens there or choose another port"
    ]


def test_alleycat_broker_without_mosquitto_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(broker_module, "MOSQUITTO_LOCATIONS", ())
    result = CliRunner().invoke(cli, ["broker", "--dir", str(tmp_path), "--port", "1"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: mosquitto is not installed: install mosquitto: sudo apt-get install mosquitto\n"
    )
