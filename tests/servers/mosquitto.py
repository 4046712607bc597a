"""mosquitto with mutual TLS on 127.0.0.1 and a free port, and an MQTT client to talk to it.

Fixtures:

- ``mqtt_pki`` (session): a :class:`TestPki`, the development PKI with devices ``bike-1``,
  ``bike-2`` and ``bike-3``, plus ``foreign_client``: the certificate and key of ``intruder``,
  signed by a different CA.
- ``mqtt_broker`` (function): a running :class:`RunningBroker`; ``stop()`` and ``start()`` make an
  outage on the same port; stopped at teardown.

Client helpers (awscrt MQTT5 with mutual TLS, nothing else to install):
``mqtt_broker.subscriber(topic)`` collects what is published to a topic, ``mqtt_broker.client()``
connects a device for publishing, and :func:`connect_outcome` says whether a certificate is let in.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5
from awsiot import mqtt5_client_builder

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import DevPki, make_dev_pki
from tests.servers.ports import free_port

#: Device client ids in the test PKI.
TEST_CLIENT_IDS = ("bike-1", "bike-2", "bike-3")

_observer_ids = itertools.count(1)


@dataclass(frozen=True, kw_only=True)
class TestPki(DevPki):
    """The test PKI, plus a device certificate from a CA the broker does not trust."""

    __test__ = False  # not a test class, despite the name

    #: ``(cert_path, key_path)`` of ``intruder``, signed by a foreign CA.
    foreign_client: tuple[Path, Path]


class MqttClient:
    """A connected awscrt MQTT5 client that records what it receives.

    Attributes:
        messages: Payloads received, in order.
        topics: The topic of each received payload.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.messages: list[bytes] = []
        self.topics: list[str] = []
        self._received = threading.Condition()

    def on_publish(self, data: Any) -> None:
        packet = data.publish_packet
        with self._received:
            self.messages.append(bytes(packet.payload))
            self.topics.append(packet.topic)
            self._received.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe to ``topic`` and wait for the SUBACK."""
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS(qos))]
        )
        suback = self._client.subscribe(packet).result(5)
        assert suback.reason_codes[0] in (
            mqtt5.SubackReasonCode.GRANTED_QOS_0,
            mqtt5.SubackReasonCode.GRANTED_QOS_1,
        ), suback.reason_codes

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish ``payload`` and wait until it is written (QoS 0) or acknowledged (QoS 1)."""
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS(qos))
        self._client.publish(packet).result(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Wait until at least ``count`` messages have arrived; return all received so far."""
        with self._received:
            self._received.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


@contextmanager
def mqtt_client(
    *,
    host: str,
    port: int,
    ca: Path,
    cert: Path,
    key: Path,
    client_id: str,
    timeout: float = 5.0,
) -> Iterator[MqttClient]:
    """Connect an MQTT5 client with mutual TLS; stop it on exit.

    Raises:
        ConnectionError: The broker refused the client or did not answer in time.
    """
    connected = threading.Event()
    stopped = threading.Event()
    failures: list[str] = []
    holder: list[MqttClient] = []

    def on_failure(data: Any) -> None:
        failures.append(str(data.exception))
        connected.set()

    client = mqtt5_client_builder.mtls_from_path(
        endpoint=host,
        port=port,
        cert_filepath=str(cert),
        pri_key_filepath=str(key),
        ca_filepath=str(ca),
        client_id=client_id,
        enable_metrics_collection=False,
        keep_alive_interval_sec=30,
        min_reconnect_delay_ms=100,
        max_reconnect_delay_ms=500,
        on_publish_received=lambda data: holder[0].on_publish(data),
        on_lifecycle_connection_success=lambda _data: connected.set(),
        on_lifecycle_connection_failure=on_failure,
        on_lifecycle_stopped=lambda _data: stopped.set(),
    )
    wrapper = MqttClient(client)
    holder.append(wrapper)
    client.start()
    try:
        if not connected.wait(timeout):
            raise ConnectionError(f"no answer from {host}:{port} within {timeout}s")
        if failures:
            raise ConnectionError(failures[0])
        yield wrapper
    finally:
        client.stop()
        stopped.wait(5)


def connect_outcome(host: str, port: int, ca: Path, cert: Path, key: Path, client_id: str) -> str:
    """``"connected"`` if the broker lets this certificate in, else the client's error."""
    try:
        with mqtt_client(host=host, port=port, ca=ca, cert=cert, key=key, client_id=client_id):
            return "connected"
    except ConnectionError as exc:
        return str(exc)


class RunningBroker:
    """A mutual-TLS mosquitto for one test, with helpers to connect to it.

    Attributes:
        host: Always ``127.0.0.1``.
        port: The broker's port; the same after ``stop()`` and ``start()``.
        pki: The development PKI the broker trusts.
        foreign_client: ``(cert, key)`` of a device from a CA the broker does not trust.
        log_path: mosquitto's log.
    """

    def __init__(self, test_pki: TestPki, log_path: Path) -> None:
        self.pki = test_pki
        self.foreign_client = test_pki.foreign_client
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("ab")
        # Room for a fleet: mosquitto drops a slow subscriber's messages beyond 1,000 by default.
        self._broker = MosquittoBroker(
            self.pki, port=self.port, log=self._log, extra_config=["max_queued_messages 1000000"]
        )

    @property
    def running(self) -> bool:
        """Whether mosquitto is alive."""
        return self._broker.running

    def start(self) -> None:
        """Start (or restart) mosquitto on the same port and wait until it accepts."""
        self._broker.start()

    def stop(self) -> None:
        """Stop mosquitto; connected clients lose their connection."""
        self._broker.stop()

    def close(self) -> None:
        """Stop mosquitto and close its log."""
        self._broker.stop()
        self._log.close()

    def client(
        self, device: str = "bike-3", *, client_id: str | None = None, timeout: float = 5.0
    ) -> Any:
        """A context manager yielding a connected :class:`MqttClient`.

        Args:
            device: Whose trusted device certificate to use.
            client_id: The MQTT client id (default: ``device``).
            timeout: Seconds to wait for the connection.
        """
        cert, key = self.pki.client(device)
        return mqtt_client(
            host=self.host,
            port=self.port,
            ca=self.pki.ca_cert,
            cert=cert,
            key=key,
            client_id=client_id or device,
            timeout=timeout,
        )

    @contextmanager
    def subscriber(self, topic: str, *, qos: int = 1) -> Iterator[MqttClient]:
        """Subscribe to ``topic`` (wildcards allowed) and collect payloads in ``.messages``.

        Connects with ``bike-3``'s certificate under a client id of its own (``observer-N``), so
        it never takes over the connection of the client under test.
        """
        with self.client("bike-3", client_id=f"observer-{next(_observer_ids)}") as client:
            client.subscribe(topic, qos)
            yield client


@pytest.fixture(scope="session")
def mqtt_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A development PKI with ``bike-1..3`` and a foreign CA's ``intruder``."""
    directory = tmp_path_factory.mktemp("mqtt-pki")
    pki = make_dev_pki(directory / "dev", TEST_CLIENT_IDS)
    foreign = make_dev_pki(directory / "foreign", ["intruder"], ca_name="Some other CA")
    own = {field.name: getattr(pki, field.name) for field in fields(pki)}
    return TestPki(**own, foreign_client=foreign.client("intruder"))


@pytest.fixture
def mqtt_broker(mqtt_pki: TestPki, tmp_path: Path) -> Iterator[RunningBroker]:
    """mosquitto with mutual TLS on 127.0.0.1 and a free port, stopped after the test."""
    broker = RunningBroker(mqtt_pki, tmp_path / "mosquitto.log")
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
