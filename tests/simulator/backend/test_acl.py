"""The stack's broker refuses what a bike's IoT policy would: real mosquitto with its ACL, and
``alleycat ride`` as a process, which counts a refused publish as rejected."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from awscrt import mqtt5

from alleycat_rider.iot.devcerts import DevPki, make_dev_pki
from simulator.backend.stack import FLEET_CLIENT_ID, RULE_CLIENT_ID
from tests.alleycat_rider.test_agent_broker import agent
from tests.servers.mosquitto import MqttClient
from tests.simulator.backend.conftest import Broker, stack_broker

pytestmark = pytest.mark.e2e


def _ride(broker: Broker, device: str, spool: Path, *topic: str) -> dict[str, int]:
    """Run ``alleycat ride`` as ``device`` for a few messages; its final counts."""
    args = broker.ride_args(device, 7, spool)
    at = args.index("--topic")
    del args[at : at + 2]  # the topic under test instead of the device's own
    with agent([*args, *topic]) as rider:
        rider.wait_for("connected")
        rider.wait_for("message", count=len(rider.events("message")) + 3)
        assert rider.stop() == 0
        stopped = rider.events("stopped")[0]
        warnings = rider.events("publish rejected")
    return {**stopped, "warnings": len(warnings)}


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        (["--own-topic"], True),  # alleycat-publish/bike-2
        (["--topic", "alleycat-publish/bike-1"], False),  # another bike's
        (["--topic", "alleycat-publish"], False),  # the shared topic
    ],
    ids=["own", "another-bikes", "shared"],
)
def test_a_bike_may_publish_only_on_its_own_topic_and_counts_refusals_as_rejected(
    backend_broker: Broker, tmp_path: Path, topic: list[str], allowed: bool
) -> None:
    with backend_broker.client(RULE_CLIENT_ID) as rule:
        rule.subscribe("alleycat-publish", qos=1)
        rule.subscribe("alleycat-publish/+", qos=1)
        counts = _ride(backend_broker, "bike-2", tmp_path / "spool.db", *topic)
        if allowed:
            received = rule.wait_for(counts["produced"], timeout=10)
    assert counts["produced"] >= 4
    assert counts["sent"] + counts["retried"] >= counts["produced"]
    if allowed:
        assert (counts["acked"], counts["rejected"]) == (counts["produced"], 0)
        assert len(received) == counts["produced"]
        assert rule.topics == ["alleycat-publish/bike-2"] * counts["produced"]
    else:
        # Refused by the broker (PUBACK: not authorized), counted once each, never resent.
        assert (counts["acked"], counts["rejected"]) == (0, counts["produced"])
        # One warning (at most one a minute per reason), not one per message.
        assert counts["warnings"] == 1 and counts["spool_depth"] == 0
        assert rule.messages == []


@pytest.fixture
def shared_broker(backend_pki: DevPki, tmp_path: Path) -> Iterator[Broker]:
    """mosquitto as ``alleycat stack --shared-topic`` runs it."""
    with stack_broker(backend_pki, tmp_path, shared_topic=True) as broker:
        yield broker


#: What the broker answers to a publish it takes (no one reads these topics here).
TAKEN = mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS


def _publish(client: MqttClient, topic: str) -> mqtt5.PubackReasonCode:
    payload = json.dumps({"uuid": str(uuid.uuid4())}).encode()
    packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
    result = client._client.publish(packet).result(5)
    code: mqtt5.PubackReasonCode = result.puback.reason_code
    return code


def test_with_shared_topic_a_bike_may_also_publish_on_the_shared_topic_but_not_anothers(
    shared_broker: Broker,
) -> None:
    with shared_broker.client("bike-2") as bike:
        assert _publish(bike, "alleycat-publish") == TAKEN
        assert _publish(bike, "alleycat-publish/bike-2") == TAKEN
        assert _publish(bike, "alleycat-publish/bike-1") == mqtt5.PubackReasonCode.NOT_AUTHORIZED


def test_the_fleet_certificate_publishes_on_the_shared_topic(backend_broker: Broker) -> None:
    # What `simulate --via mqtt` does against the stack: many riders on one certificate.
    pki = make_dev_pki(backend_broker.pki.directory, [FLEET_CLIENT_ID])
    with Broker(pki, backend_broker.port).client(FLEET_CLIENT_ID) as fleet:
        assert _publish(fleet, "alleycat-publish") == TAKEN
    with backend_broker.client("bike-1") as bike:
        assert _publish(bike, "alleycat-publish") == mqtt5.PubackReasonCode.NOT_AUTHORIZED
