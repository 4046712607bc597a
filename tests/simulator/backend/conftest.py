"""Real servers for the backend: mosquitto with the stack's ACL, kinesalite, and the services
(``alleycat rule``, ``alleycat standings``, ``alleycat stack``) as processes users run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.iot.broker import MosquittoBroker
from alleycat_rider.iot.devcerts import DevPki, make_dev_pki
from simulator.backend.acl import RULE_CLIENT_ID, STANDINGS_CLIENT_ID, acl
from simulator.backend.stack import BROKER_LIMITS
from tests.servers.mosquitto import mqtt_client
from tests.servers.ports import free_port

DEVICES = ("bike-1", "bike-2")


@pytest.fixture(scope="session")
def backend_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """Devices bike-1 and bike-2, and the rule's and the standings backend's certificates."""
    directory = tmp_path_factory.mktemp("backend-pki")
    return make_dev_pki(directory, [*DEVICES, RULE_CLIENT_ID, STANDINGS_CLIENT_ID])


@dataclass
class Broker:
    pki: DevPki
    port: int
    host: str = "127.0.0.1"

    def client(self, device: str) -> Any:
        cert, key = self.pki.client(device)
        return mqtt_client(
            host=self.host, port=self.port, ca=self.pki.ca_cert, cert=cert, key=key,
            client_id=device,
        )  # fmt: skip

    def options(self, client_id: str) -> list[str]:
        """``--mqtt-port`` and the certificate options of a backend service."""
        cert, key = self.pki.client(client_id)
        return [
            "--mqtt-port", str(self.port), "--cert", str(cert), "--key", str(key),
            "--ca", str(self.pki.ca_cert),
        ]  # fmt: skip

    def ride_args(self, device: str, racer_id: int, spool: Path) -> list[str]:
        cert, key = self.pki.client(device)
        return [
            "--endpoint", self.host, "--port", str(self.port), "--cert", str(cert),
            "--key", str(key), "--ca", str(self.pki.ca_cert), "--client-id", device,
            "--racer-id", str(racer_id), "--class-id", "1", "--qos", "1",
            "--topic", f"alleycat-publish/{device}", "--spool", str(spool),
            "--sensor", "mock", "--seed", str(racer_id), "--log-format", "json",
            "--race-seconds", "300", "--log-level", "debug",
        ]  # fmt: skip


@pytest.fixture
def backend_broker(backend_pki: DevPki, tmp_path: Path) -> Iterator[Broker]:
    """mosquitto as ``alleycat stack`` runs it: mutual TLS, the ACL, room for a fleet."""
    with stack_broker(backend_pki, tmp_path) as broker:
        yield broker


@contextmanager
def stack_broker(pki: DevPki, tmp_path: Path, *, shared_topic: bool = False) -> Iterator[Broker]:
    """mosquitto as ``alleycat stack`` (``--shared-topic``) runs it, until the block ends."""
    acl_file = tmp_path / "acl"
    acl_file.write_text(
        acl("alleycat-publish", "alleycat-subscribe", devices=DEVICES, shared_topic=shared_topic)
    )
    port = free_port()
    with (tmp_path / "mosquitto.log").open("ab") as log:
        broker = MosquittoBroker(
            pki, port=port, log=log, extra_config=[*BROKER_LIMITS, f"acl_file {acl_file}"]
        )
        broker.start()
        try:
            yield Broker(pki, port)
        finally:
            broker.stop()


class Service:
    """An ``alleycat`` command run as a process; stdout and stderr go to files."""

    def __init__(self, args: list[str], directory: Path, name: str) -> None:
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLEYCAT_")}
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "alleycat", *args],
                stdout=out, stderr=err, env=env, cwd=directory,
            )  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """Stop it however it is: SIGTERM first, so a stack stops what it started, then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(10)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def result(self) -> dict[str, Any]:
        """The JSON the command printed last on stdout."""
        lines = self.stdout_path.read_text().strip().splitlines()
        assert lines, f"no output; stderr: {self.stderr[-2000:]}"
        parsed: dict[str, Any] = json.loads(lines[-1])
        return parsed


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    """Start ``alleycat`` commands with ``services(args, name)``; all are stopped at the end."""
    started: list[Service] = []

    def start(args: list[str], name: str) -> Service:
        service = Service(args, tmp_path, name)
        started.append(service)
        return service

    yield start
    for service in started:
        service.kill()
