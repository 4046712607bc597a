"""``alleycat stack``: a whole Alleycat on this machine, started and stopped as one.

::

    bikes / simulate --via mqtt        alleycat-publish[/<client id>]
         │  MQTT 5, mutual TLS                  │
         ▼                                      ▼
    mosquitto (127.0.0.1:8883) ──QoS 1──▶ rule ──PutRecords──▶ Kinesis (moto or kinesalite,
         ▲                                                      127.0.0.1:4567), stream alleycat
         │ alleycat-subscribe (QoS 0)                                 │
         └────────────────────────── standings ◀──GetRecords──────────┘

    a bike with only the claim ──$aws/certificates/create[-from-csr]/json──▶ mosquitto ──▶
      ──$aws/provisioning-templates/<name>/provision/json──▶ fleet provisioning (the local CA)

Started in that order and stopped in the reverse one: mosquitto (mutual TLS, certificates made in
``certs/dev`` when missing), the Kinesis server, the stream, the rule and the standings backend
(both on threads of this process), and the fleet provisioning service (a thread too) that
lets bikes with only the claim certificate enrol. Every device may publish only on
``<topic>/<its thing name>`` (and on the rule's topic itself with ``shared_topic``), and read
the results topic; a claim certificate may use only the provisioning topics; only the rule may
read the rides and only the standings backend may publish results (a mosquitto ACL, as IoT
policies would: :mod:`simulator.backend.acl`).

Device certificates added to ``certs/dev/devices`` while the stack runs (``alleycat certs dev
--client-id``) are picked up within :data:`DEVICE_POLL_SECONDS`: the ACL is written again and
mosquitto reads it again, so the new bike may ride on its own topic without a restart.

The work folder keeps ``provisioning-templates/*.json`` (``alleycat-bikes.json`` written when
there is none) and ``things.json``, the things enrolment made.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alleycat_rider.iot.broker import LOCALHOST, MosquittoBroker, find_mosquitto, port_in_use
from alleycat_rider.iot.devcerts import (
    DEFAULT_DEV_DIR,
    DevPki,
    claim_paths,
    device_paths,
    make_dev_claim,
    make_dev_pki,
)
from alleycat_rider.mqtt import MqttSettings
from alleycat_rider.plural import counted
from simulator.backend.acl import (
    CLAIM_NAME,
    FLEET_CLIENT_ID,
    PROVISIONING_CLIENT_ID,
    RULE_CLIENT_ID,
    STANDINGS_CLIENT_ID,
    AclFile,
    acl,
)
from simulator.backend.fleet_template import (
    DEFAULT_TEMPLATE_NAME,
    ProvisioningTemplate,
    load_templates,
)
from simulator.backend.kinesis_server import KinesisServer, StackError
from simulator.backend.provisioning import ClientMap, FleetProvisioning, ThingRegistry
from simulator.backend.rule import DEFAULT_RULE_TOPIC, ErrorAction, IotRule
from simulator.backend.standings import DEFAULT_RESULTS_TOPIC, Standings, StandingsStore
from simulator.backend.template import KeyTemplate

#: The devices ``stack`` makes certificates for.
STACK_DEVICES = ("bike-1", "bike-2")
#: The racer ids of the printed ride commands: below a fleet's (100 and up), so that a bike
#: and a virtual rider are never the same racer.
STACK_RACER_IDS = {"bike-1": 1, "bike-2": 2}
#: The serial number of the printed ride command of a bike with only the claim files.
CLAIM_BIKE_SERIAL = "SN-0001"
CLAIM_BIKE_RACER_ID = 3
DEFAULT_MQTT_PORT = 8883
#: Seconds between looks at ``certs/dev/devices`` for certificates added or removed.
DEVICE_POLL_SECONDS = 2.0
DEFAULT_KINESIS_PORT = 4567
KINESIS_SERVERS = ("moto", "kinesalite")
LOCAL_REGION = "us-east-1"

__all__ = [
    "FLEET_CLIENT_ID",
    "RULE_CLIENT_ID",
    "STANDINGS_CLIENT_ID",
    "Stack",
    "StackError",
    "acl",
]

#: mosquitto beyond ``alleycat broker``'s configuration: room for a fleet, and the ACL.
BROKER_LIMITS = (
    "max_queued_messages 1000000",
    "max_inflight_messages 1000",
    "max_connections -1",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StackOptions:
    """What ``alleycat stack`` starts, and where."""

    certs: Path = DEFAULT_DEV_DIR
    workdir: Path = Path(".alleycat-stack")
    """Logs, the error-action file, the standings state, the templates and the things."""
    mqtt_port: int = DEFAULT_MQTT_PORT
    kinesis_port: int = DEFAULT_KINESIS_PORT
    kinesis: str = "moto"
    stream: str = "alleycat"
    shards: int = 1
    partition_key: str = "${timestamp()}"
    stamp_client_id: bool = False
    client_map: dict[str, int] | None = None
    rule_topic: str = DEFAULT_RULE_TOPIC
    results_topic: str = DEFAULT_RESULTS_TOPIC
    shared_topic: bool = False
    """Let every device publish on the rule's topic itself too (weaker)."""


def _device(certs: Path, client_id: str) -> dict[str, str]:
    cert, key = device_paths(certs, client_id)
    return {"cert": str(cert), "key": str(key)}


def _claim(certs: Path, templates: Sequence[str], workdir: Path) -> dict[str, Any]:
    cert, key = claim_paths(certs)
    template = DEFAULT_TEMPLATE_NAME if DEFAULT_TEMPLATE_NAME in templates else templates[0]
    return {
        "cert": str(cert),
        "key": str(key),
        "templates": list(templates),
        "template": template,
        "serial_number": CLAIM_BIKE_SERIAL,
        "racer_id": CLAIM_BIKE_RACER_ID,
        "spool": str(bike_spool(workdir, CLAIM_BIKE_SERIAL)),
    }


def bike_spool(workdir: Path, client_id: str) -> Path:
    """The spool of the printed ride command of ``client_id``: one per bike, each agent's own
    (its race is kept beside it)."""
    return workdir / "bikes" / client_id / "spool.sqlite3"


@dataclass(slots=True)
class Stack:
    """Everything ``alleycat stack`` runs; :meth:`start`, then :meth:`stop` (always)."""

    options: StackOptions
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    broker: MosquittoBroker | None = None
    kinesis: KinesisServer | None = None
    rule: IotRule | None = None
    standings: Standings | None = None
    pki: DevPki | None = None
    registry: ThingRegistry | None = None
    provisioning: FleetProvisioning | None = None
    templates: tuple[str, ...] = ()
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _scratch: tempfile.TemporaryDirectory[str] | None = None
    _acl_file: AclFile | None = None
    _acl_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Start every part, in order; on failure, stop what started and raise StackError."""
        o = self.options
        for port, what in ((o.mqtt_port, "--mqtt-port"), (o.kinesis_port, "--kinesis-port")):
            if port_in_use(LOCALHOST, port):
                raise StackError(f"port {port} on {LOCALHOST} is in use: choose another {what}")
        find_mosquitto()  # a missing mosquitto is one line before anything starts
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        o = self.options
        o.workdir.mkdir(parents=True, exist_ok=True)
        services = [FLEET_CLIENT_ID, RULE_CLIENT_ID, STANDINGS_CLIENT_ID, PROVISIONING_CLIENT_ID]
        self.pki = make_dev_pki(o.certs, [*STACK_DEVICES, *services])
        make_dev_claim(o.certs)
        templates = load_templates(o.workdir / "provisioning-templates")
        self.templates = tuple(templates)
        self.registry = ThingRegistry(o.workdir / "things.json")
        self._scratch = tempfile.TemporaryDirectory(prefix="alleycat-stack-")
        os.chmod(self._scratch.name, 0o755)  # mosquitto may read it as its own user
        self._acl_file = acl_file = AclFile(Path(self._scratch.name) / "acl")
        devices = self._devices()
        acl_file.write(self._acl(devices))
        broker_log = (o.workdir / "mosquitto.log").open("ab")
        self._closers.append(broker_log.close)
        self.broker = MosquittoBroker(
            self.pki,
            port=o.mqtt_port,
            log=broker_log,
            extra_config=[*BROKER_LIMITS, f"acl_file {acl_file.path}"],
        )
        self.broker.start()
        self.say(f"stack: mosquitto on {LOCALHOST}:{o.mqtt_port} (mutual TLS, {o.certs})")
        kinesis_log = (o.workdir / f"{o.kinesis}.log").open("ab")
        self._closers.append(kinesis_log.close)
        self.kinesis = KinesisServer(o.kinesis, o.kinesis_port, kinesis_log)
        self.kinesis.start()
        self.say(f"stack: {o.kinesis} on {self.kinesis.url}")
        self._start_rule()
        self._start_standings()
        self._start_provisioning(templates)
        self._thread("devices", lambda: self._watch_devices(devices))

    def _devices(self) -> list[str]:
        """The bikes' certificate names in ``certs/devices``: each its own thing name."""
        assert self.pki is not None
        services = {FLEET_CLIENT_ID, RULE_CLIENT_ID, STANDINGS_CLIENT_ID, PROVISIONING_CLIENT_ID}
        services.add(CLAIM_NAME)  # a device certificate of that name would ride as the claim
        return sorted(
            path.stem
            for path in (self.pki.directory / "devices").glob("*.crt")
            if path.stem not in services
        )

    def _reload_acl(self) -> None:
        """Write the ACL anew and have mosquitto read it again (enrolment, new devices)."""
        assert self._acl_file is not None and self.broker is not None
        with self._acl_lock:
            self._acl_file.write(self._acl(self._devices()))
            AclFile.reload(self.broker.pid)

    def _watch_devices(self, seen: list[str]) -> None:
        """Let device certificates made while the stack runs ride, without a restart."""
        while not self.stop_event.wait(DEVICE_POLL_SECONDS):
            devices = self._devices()
            if devices == seen:
                continue
            self._reload_acl()
            added = sorted(set(devices) - set(seen))
            removed = sorted(set(seen) - set(devices))
            if added:
                topics = ", ".join(f"{self.options.rule_topic}/{name}" for name in added)
                self.say(f"stack: new device certificates may ride on {topics}")
            if removed:
                self.say(f"stack: device certificates gone: {', '.join(removed)}")
            seen = devices

    def _acl(self, devices: Sequence[str]) -> str:
        """The broker's ACL: the services, the certificates in ``certs/devices``, the claim
        certificate and the things enrolment made."""
        o = self.options
        assert self.registry is not None
        return acl(
            o.rule_topic,
            o.results_topic,
            devices=devices,
            things=self.registry.principals(),
            claims=[CLAIM_NAME],
            templates=self.templates,
            shared_topic=o.shared_topic,
        )

    def _start_provisioning(self, templates: Mapping[str, ProvisioningTemplate]) -> None:
        from simulator.backend.provisioning import LocalCa
        from simulator.backend.services import start_provisioning

        assert self.pki is not None and self.registry is not None
        self.provisioning = service = FleetProvisioning(LocalCa(self.pki), templates, self.registry)
        run = start_provisioning(
            self._mqtt(PROVISIONING_CLIENT_ID), service, reload_acl=self._reload_acl, say=self.say
        )
        self._thread("provisioning", lambda: run(self.stop_event))
        self.say(f"stack: fleet provisioning, templates {', '.join(self.templates)}")

    def _mqtt(self, client_id: str) -> MqttSettings:
        assert self.pki is not None
        cert, key = device_paths(self.pki.directory, client_id)
        return MqttSettings(
            endpoint=LOCALHOST,
            port=self.options.mqtt_port,
            client_id=client_id,
            cert=cert,
            key=key,
            ca=self.pki.ca_cert,
        )

    def _start_rule(self) -> None:
        from simulator.backend.services import open_stream, rule_link, run_rule

        o = self.options
        assert self.kinesis is not None
        sink = open_stream(
            stream=o.stream,
            region=LOCAL_REGION,
            profile=None,
            endpoint_url=self.kinesis.url,
            create_stream=True,
            shards=o.shards,
        )
        self._closers.append(sink.close)
        error_action = ErrorAction(
            o.workdir / "rule-errors.jsonl", rule_name="alleycatIngest", stream=o.stream
        )
        self.rule = rule = IotRule(
            sink,
            stream=o.stream,
            key=KeyTemplate.parse(o.partition_key),
            error_action=error_action,
            rule_topic=o.rule_topic,
            stamp_client_id=o.stamp_client_id,
        )
        self._closers.append(rule.close)
        link = rule_link(
            self._mqtt(RULE_CLIENT_ID), rule, [o.rule_topic, f"{o.rule_topic}/+"], say=self.say
        )
        link.start()
        self._thread("rule", lambda: run_rule(rule, link, self.stop_event))
        self.say(f"stack: rule {o.rule_topic} -> stream {o.stream} ({counted(o.shards, 'shard')})")

    def _start_standings(self) -> None:
        from simulator.backend.services import run_standings, standings_link, tail_for
        from simulator.sinks.kinesis import make_client

        o = self.options
        assert self.kinesis is not None and self.registry is not None
        client = make_client(region=LOCAL_REGION, endpoint_url=self.kinesis.url)
        self._closers.append(client.close)
        link = standings_link(self._mqtt(STANDINGS_CLIENT_ID), say=self.say)
        self.standings = standings = Standings(
            lambda payload: link.publish(o.results_topic, payload),
            store=StandingsStore(o.workdir / "standings.db"),
            client_map=None if o.client_map is None else ClientMap(o.client_map, self.registry),
        )
        tail = tail_for(
            standings,
            client,
            o.stream,
            start="TRIM_HORIZON",
            say=self.say,
            where=str(o.workdir / "standings.db"),
        )
        link.start()
        self._thread("standings", lambda: run_standings(standings, tail, link, self.stop_event))
        self.say(f"stack: standings {o.stream} -> {o.results_topic}")

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # reported once, and the stack stops
                self.errors.append(f"{name}: {exc}")
                self.stop_event.set()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def endpoints(self) -> dict[str, Any]:
        """Where everything is, for ``--json`` and the printed commands."""
        o = self.options
        assert self.pki is not None
        return {
            "mqtt": {"host": LOCALHOST, "port": o.mqtt_port, "ca": str(self.pki.ca_cert)},
            "kinesis": {
                "endpoint_url": f"http://{LOCALHOST}:{o.kinesis_port}",
                "server": o.kinesis,
                "stream": o.stream,
                "region": LOCAL_REGION,
            },
            "devices": {
                client_id: {
                    **_device(o.certs, client_id),
                    "racer_id": STACK_RACER_IDS[client_id],
                    "spool": str(bike_spool(o.workdir, client_id)),
                }
                for client_id in STACK_DEVICES
            },
            "fleet": _device(o.certs, FLEET_CLIENT_ID),
            "claim": _claim(o.certs, self.templates, o.workdir),
            "topics": {"rides": o.rule_topic, "results": o.results_topic},
            "error_action_file": str(o.workdir / "rule-errors.jsonl"),
        }

    def status(self) -> dict[str, Any]:
        """What has gone through, for the live status."""
        rule = self.rule.counts.to_dict() if self.rule is not None else {}
        standings = self.standings.report() if self.standings is not None else {}
        enrolment = dict(self.provisioning.counts) if self.provisioning is not None else {}
        return {"rule": rule, "standings": standings, "enrolment": enrolment}

    def stop(self) -> None:
        """Stop everything that started, in reverse order. Safe to call twice."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(10)
        self.threads.clear()
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception as exc:  # one part failing to close must not keep others running
                self.say(f"stack: while stopping: {exc}")
        if self.kinesis is not None:
            self.kinesis.stop()
        if self.broker is not None:
            self.broker.stop()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
