"""mosquitto as ``alleycat stack`` runs it for enrolment: mutual TLS, the stack's ACL (claim
certificate, bikes, services) and the stack's fleet provisioning service on a thread, without
Kinesis, the rule or the standings."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import DevPki, make_dev_claim, make_dev_pki
from alleycat_rider.mqtt import MqttSettings
from simulator.backend.acl import (
    CLAIM_NAME,
    PROVISIONING_CLIENT_ID,
    RULE_CLIENT_ID,
    AclFile,
    acl,
)
from simulator.backend.fleet_template import ProvisioningTemplate, default_template
from simulator.backend.provisioning import FleetProvisioning, LocalCa, ThingRegistry
from simulator.backend.services import start_provisioning
from tests.servers.mosquitto import mqtt_client
from tests.servers.ports import free_port

DEVICES = ("bike-1", "bike-2")


@dataclass
class ProvisioningBroker:
    """The running broker and service; ``client()`` connects with a certificate of the PKI."""

    pki: DevPki
    port: int
    claim: tuple[Path, Path]
    service: FleetProvisioning
    registry: ThingRegistry
    host: str = "127.0.0.1"
    said: list[str] = field(default_factory=list)

    def client(self, cert: Path, key: Path, client_id: str) -> Any:
        return mqtt_client(
            host=self.host, port=self.port, ca=self.pki.ca_cert, cert=cert, key=key,
            client_id=client_id,
        )  # fmt: skip

    def device(self, name: str) -> Any:
        cert, key = self.pki.client(name)
        return self.client(cert, key, name)

    def settings(self, cert: Path, key: Path, client_id: str) -> MqttSettings:
        return MqttSettings(
            endpoint=self.host, port=self.port, client_id=client_id, cert=cert, key=key,
            ca=self.pki.ca_cert,
        )  # fmt: skip


@contextmanager
def provisioning_broker(
    directory: Path, templates: Mapping[str, ProvisioningTemplate] | None = None
) -> Iterator[ProvisioningBroker]:
    """Start mosquitto and the provisioning service in ``directory``; stop both at the end."""
    pki = make_dev_pki(directory / "pki", [*DEVICES, PROVISIONING_CLIENT_ID, RULE_CLIENT_ID])
    claim = make_dev_claim(pki.directory)
    templates = templates or {"alleycat-bikes": default_template()}
    registry = ThingRegistry(directory / "things.json")
    acl_file = AclFile(directory / "acl")

    def acl_text() -> str:
        return acl(
            "alleycat-publish", "alleycat-subscribe", devices=DEVICES,
            things=registry.principals(), claims=[CLAIM_NAME], templates=templates,
        )  # fmt: skip

    acl_file.write(acl_text())
    port = free_port()
    service = FleetProvisioning(LocalCa(pki), templates, registry)
    stop = threading.Event()
    with (directory / "mosquitto.log").open("ab") as log:
        broker = MosquittoBroker(
            pki, port=port, log=log, extra_config=[f"acl_file {acl_file.path}"]
        )
        broker.start()
        running = ProvisioningBroker(pki, port, claim, service, registry)

        def reload_acl() -> None:
            acl_file.write(acl_text())
            AclFile.reload(broker.pid)

        cert, key = pki.client(PROVISIONING_CLIENT_ID)
        thread: threading.Thread | None = None
        try:
            run = start_provisioning(
                running.settings(cert, key, PROVISIONING_CLIENT_ID),
                service,
                reload_acl=reload_acl,
                say=running.said.append,
            )
            thread = threading.Thread(target=run, args=(stop,), daemon=True)
            thread.start()
            yield running
        finally:
            stop.set()
            if thread is not None:
                thread.join(10)
            broker.stop()
