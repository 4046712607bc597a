"""The local mutual-TLS broker: who gets in, what goes through, and surviving an outage."""

from __future__ import annotations

import pytest

from alleycat_rider import broker as broker_module
from alleycat_rider.broker import MosquittoBroker, MosquittoNotFound, mosquitto_config
from tests.servers.mosquitto import RunningBroker, TestPki, connect_outcome


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
