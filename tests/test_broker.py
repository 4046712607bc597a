"""The local mutual-TLS broker: who gets in, what goes through, and surviving an outage."""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from alleycat.cli import cli
from alleycat_rider import broker as broker_module
from alleycat_rider.broker import MosquittoBroker, MosquittoNotFound, mosquitto_config, port_in_use
from alleycat_rider.devcerts import make_dev_pki
from tests.servers.mosquitto import RunningBroker, TestPki, connect_outcome
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


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_alleycat_broker_lets_dev_devices_in_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    certs = tmp_path / "certs" / "dev"
    subprocess.run(
        [sys.executable, "-m", "alleycat", "certs", "dev", "--dir", str(certs)],
        check=True,
        capture_output=True,
    )
    foreign = make_dev_pki(tmp_path / "foreign", ["intruder"], ca_name="Some other CA")
    with (tmp_path / "broker.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "alleycat", "broker", "--dir", str(certs), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            _wait_until_listening(port, process)
            ride = _printed_ride_command(process)
            ca, cert, key = (Path(_option(ride, name)) for name in ("--ca", "--cert", "--key"))
            client_id = _option(ride, "--client-id")
            assert int(_option(ride, "--port")) == port
            host = _option(ride, "--endpoint")
            assert connect_outcome(host, port, ca, cert, key, client_id) == "connected"
            intruder_cert, intruder_key = foreign.client("intruder")
            refused = connect_outcome(host, port, ca, intruder_cert, intruder_key, "intruder")
            assert refused != "connected"
        finally:
            process.send_signal(stop_signal)
            out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert not port_in_use("127.0.0.1", port), "mosquitto outlived alleycat broker"
    assert "Broker stopped." in (tmp_path / "broker.log").read_text()


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
