"""`alleycat ride` against brokers it cannot use: each says why in one line and exits 1.

A broker whose CONNACK allows QoS 0 only, a broker that speaks MQTT 3.1.1 only (a fake on
127.0.0.1: bytes in, bytes out, since mosquitto cannot refuse MQTT 5), a TLS broker reached over
plain TCP, and a server certificate the device does not trust. Before these answers the agent
retried for ever, or blamed the device certificate after 10 to 30 s.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from alleycat_rider.agent.spool import Spool
from alleycat_rider.iot.broker import MosquittoBroker
from tests.alleycat_rider.test_agent_broker import AgentProcess, agent
from tests.servers.mosquitto import RunningBroker, TestPki
from tests.servers.ports import free_port

#: How long a refused agent may take to exit: far more than it needs, far less than for ever.
EXIT_WAIT = 30


def ride_args(host: str, port: int, *more: str) -> list[str]:
    return [
        "--endpoint", host, "--port", str(port), "--client-id", "bike-1", "--racer-id", "101",
        "--sensor", "mock", "--log-format", "json", "--log-level", "debug", *more,
    ]  # fmt: skip


def tls_args(pki: TestPki, *, ca: Path | None) -> list[str]:
    cert, key = pki.client("bike-1")
    return ["--cert", str(cert), "--key", str(key), *(["--ca", str(ca)] if ca else [])]


def refusal(rider: AgentProcess) -> str:
    """The one line a refused agent prints, once it has exited with status 1."""
    status = rider.process.wait(EXIT_WAIT)
    rider.close()
    assert status == 1, rider.stderr
    assert len(rider.stderr) == 1, rider.stderr
    assert not [line for line in rider.lines if line["level"] == "error"]  # said once, on stderr
    return rider.stderr[0]


@contextmanager
def broker_allowing_qos_0(pki: TestPki, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    with (
        (tmp_path / "mosquitto.log").open("ab") as log,
        MosquittoBroker(pki, port=port, log=log, extra_config=["max_qos 0"]),
    ):
        yield port


def test_qos_1_to_a_broker_allowing_qos_0_only_is_one_line_and_keeps_the_spool(
    mqtt_pki: TestPki, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.db"
    with broker_allowing_qos_0(mqtt_pki, tmp_path) as port:
        args = ride_args("127.0.0.1", port, "--qos", "1", "--spool", str(spool))
        with agent(args + tls_args(mqtt_pki, ca=mqtt_pki.ca_cert)) as rider:
            line = refusal(rider)
        assert line.startswith(f"Error: 127.0.0.1:{port} accepts QoS 0 only")
        assert "--qos 0" in line
        # What was made before the CONNACK is still spooled, for a broker that takes QoS 1.
        produced = [event["uuid"] for event in rider.events("message")]
        with Spool(spool) as kept:
            assert {m.uuid for m in kept.pending(limit=100)} == set(produced)
        # And the advice works: QoS 0 rides on the same broker.
        args = ride_args("127.0.0.1", port, "--qos", "0")
        with agent(args + tls_args(mqtt_pki, ca=mqtt_pki.ca_cert)) as rider:
            rider.wait_for("connected")
            rider.wait_until(lambda: len(rider.events("message")) >= 2)
            assert rider.stop() == 0
    stopped = rider.events("stopped")[0]
    assert stopped["acked"] + stopped["dropped"] == stopped["produced"]
    assert stopped["acked"] >= 1


class Mqtt311Broker:
    """A broker on 127.0.0.1 that answers every CONNECT with MQTT 3.1.1's CONNACK bytes."""

    def __init__(self, connack: bytes) -> None:
        self._connack = connack
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._server.settimeout(0.1)  # accept() is not woken by close(): look again often
        self._closed = threading.Event()
        self.connects: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    self.connects.append(connection.recv(4096))
                    connection.sendall(self._connack)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._server.close()


@pytest.mark.parametrize(
    "connack",
    [
        pytest.param(bytes([0x20, 0x02, 0x00, 0x01]), id="unacceptable-protocol-version"),
        pytest.param(bytes([0x20, 0x02, 0x00, 0x00]), id="accepted-in-3.1.1"),
    ],
)
def test_a_broker_speaking_mqtt_3_1_1_only_is_named_in_one_line(
    connack: bytes, tmp_path: Path
) -> None:
    broker = Mqtt311Broker(connack)
    try:
        args = ride_args("127.0.0.1", broker.port, "--qos", "1", "--spool", str(tmp_path / "s"))
        with agent(args) as rider:
            line = refusal(rider)
    finally:
        broker.close()
    # The agent asked in MQTT 5 (protocol name MQTT, level 5) and was answered in 3.1.1.
    assert broker.connects and broker.connects[0][0] == 0x10
    assert b"\x00\x04MQTT\x05" in broker.connects[0]
    assert line.startswith(f"Error: 127.0.0.1:{broker.port} does not speak MQTT 5")


def test_plain_tcp_to_a_tls_broker_says_it_probably_wants_tls(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    args = ride_args(mqtt_broker.host, mqtt_broker.port, "--spool", str(tmp_path / "spool.db"))
    with agent(args) as rider:
        line = refusal(rider)
    assert "closed the connection during the MQTT handshake: it probably wants TLS" in line
    assert "--cert/--key/--ca" in line


def test_a_forgotten_ca_says_the_system_trust_store_does_not_trust_the_server(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    args = ride_args(mqtt_broker.host, mqtt_broker.port, "--spool", str(tmp_path / "spool.db"))
    with agent(args + tls_args(mqtt_broker.pki, ca=None)) as rider:
        line = refusal(rider)
    assert "the server's certificate is not trusted by the system trust store" in line
    assert "pass --ca" in line
    assert "device certificate" not in line


def loaded_libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {Path(line.split()[-1]).name for line in maps if "/" in line}


def test_a_healthy_tls_start_never_runs_the_check_nor_loads_openssl(
    mqtt_broker: RunningBroker, tmp_path: Path
) -> None:
    args = ride_args(mqtt_broker.host, mqtt_broker.port, "--spool", str(tmp_path / "spool.db"))
    with agent(args + tls_args(mqtt_broker.pki, ca=mqtt_broker.pki.ca_cert)) as rider:
        rider.wait_for("connected")
        # Past the moment a slow connection would be checked (2 s after start).
        rider.wait_until(lambda: len(rider.events("message")) >= 4)
        libraries = loaded_libraries(rider.process.pid)
        assert rider.stop() == 0
    assert not rider.events("tls check told nothing")
    # Python's ssl brings OpenSSL (about 5 MB); awscrt carries its own TLS.
    assert not any(name.startswith(("libssl", "libcrypto")) for name in libraries)


def test_the_check_loads_openssl_so_its_absence_means_the_check_did_not_run() -> None:
    code = "import alleycat_rider.tlscheck, os; print(open(f'/proc/{os.getpid()}/maps').read())"
    maps = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "libssl" in maps
