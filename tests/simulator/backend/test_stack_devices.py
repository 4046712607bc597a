"""A device certificate made while ``alleycat stack`` runs rides without a restart: the stack
sees it in ``certs/dev/devices``, writes its ACL again and has mosquitto read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from awscrt import mqtt5

from alleycat_rider.iot.devcerts import make_dev_pki
from tests.servers.ports import free_port

from .conftest import Broker
from .test_acl import _publish
from .test_loop import wait_until

pytestmark = pytest.mark.e2e


def test_a_device_certificate_made_while_the_stack_runs_may_ride_on_its_own_topic(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    mqtt_port = free_port()
    certs = tmp_path / "certs"
    stack = services(
        ["stack", "--mqtt-port", str(mqtt_port), "--kinesis-port", str(free_port()),
         "--certs", str(certs), "--workdir", str(tmp_path / "stack")],
        "stack",
    )  # fmt: skip
    wait_until(lambda: "Alleycat is running" in stack.stdout_path.read_text(), 60, "the stack")

    pki = make_dev_pki(certs, ["bike-9"])  # as `alleycat certs dev --client-id bike-9` does
    wait_until(lambda: "alleycat-publish/bike-9" in stack.stderr, 15, "the stack to see bike-9")
    with Broker(pki, mqtt_port).client("bike-9") as bike:
        # The rule reads alleycat-publish/+: the publish is taken and delivered.
        assert _publish(bike, "alleycat-publish/bike-9") == mqtt5.PubackReasonCode.SUCCESS
        assert _publish(bike, "alleycat-publish/bike-1") == mqtt5.PubackReasonCode.NOT_AUTHORIZED

    (certs / "devices" / "bike-9.crt").unlink()
    wait_until(lambda: "gone: bike-9" in stack.stderr, 15, "the stack to see bike-9 gone")
    assert stack.stop() == 0
