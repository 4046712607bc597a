"""What a user who gets something wrong reads: one line, exit 1 or 2, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from alleycat.cli import cli
from alleycat_rider.iot.broker import MosquittoNotFound
from tests.servers.ports import free_port


def alleycat(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    completed = subprocess.run(
        [sys.executable, "-m", "alleycat", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=cwd,
    )  # fmt: skip
    return completed.returncode, completed.stdout, completed.stderr


def test_stack_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stdout, stderr = alleycat(
            "stack", "--mqtt-port", str(port), "--kinesis-port", str(free_port()), cwd=tmp_path
        )
    assert code == 1 and stdout == ""
    assert stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is in use: choose another --mqtt-port"
    )
    assert not (tmp_path / "certs").exists()  # nothing started, nothing made


def test_stack_without_mosquitto_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> str:
        raise MosquittoNotFound("mosquitto is not installed: install mosquitto: sudo apt-get ...")

    monkeypatch.setattr("simulator.backend.stack.find_mosquitto", missing)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["stack", "--mqtt-port", str(free_port()), "--kinesis-port", str(free_port())]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: mosquitto is not installed: install mosquitto: sudo apt-get ..."
    ]


def test_stack_with_a_template_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    templates = tmp_path / ".alleycat-stack" / "provisioning-templates"
    templates.mkdir(parents=True)
    (templates / "bikes.json").write_text("{")
    code, stdout, stderr = alleycat(
        "stack", "--mqtt-port", str(free_port()), "--kinesis-port", str(free_port()), cwd=tmp_path
    )
    assert code == 1 and stdout == ""
    [line] = stderr.strip().splitlines()
    assert line.startswith("Error: .alleycat-stack/provisioning-templates/bikes.json is not JSON: ")


def test_stack_with_kinesalite_but_no_node_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no node, no npm
    code, _, stderr = alleycat(
        "stack", "--kinesis", "kinesalite", "--mqtt-port", str(free_port()),
        "--kinesis-port", str(free_port()), "--certs", str(tmp_path / "certs"),
        "--workdir", str(tmp_path / "work"), env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "Error: --kinesis kinesalite needs Node.js: install nodejs, or use moto"
    )
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rule", "--partition-key", "${now()}"], "cannot evaluate ${now()}"),
        (["rule", "--plain", "--mqtt-endpoint", "broker.example.com"], "only to 127.0.0.1"),
        (["standings", "--client-map", "bikes.json"], "the client map bikes.json must be"),
    ],
)
def test_rule_and_standings_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bikes.json").write_text(json.dumps([1, 2]))
    code, _, stderr = alleycat(*args, "--endpoint-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr


def test_rule_without_its_certificate_says_which_file(tmp_path: Path) -> None:
    code, _, stderr = alleycat(
        "rule", "--endpoint-url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path
    )
    assert code == 1
    assert stderr.strip() == (
        "Error: the device certificate certs/dev/devices/alleycat-rule.crt does not exist: "
        "check --cert"
    )


@pytest.mark.parametrize("command", ["rule", "standings", "stack"])
def test_help_teaches_with_examples(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"alleycat {command}" in result.output


def test_the_rule_ends_with_one_line_of_counts_without_json(
    tmp_path: Path, mqtt_broker: Any, kinesis_server: str, kinesis_client: Any, stream_name: str
) -> None:
    from tests.servers.kinesis import create_stream

    create_stream(kinesis_client, stream_name, 1)
    cert, key = mqtt_broker.pki.client("bike-3")
    code, stdout, stderr = alleycat(
        "rule", "--mqtt-port", str(mqtt_broker.port), "--cert", str(cert), "--key", str(key),
        "--ca", str(mqtt_broker.pki.ca_cert), "--client-id", "bike-3", "--stream", stream_name,
        "--endpoint-url", kinesis_server, "--duration", "1", "--status-interval", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout == ""
    assert stderr.strip().splitlines()[-1] == (
        "rule: received 0, written 0, retried 0, error action 0, pending 0, requests 0, "
        "failed requests 0 (error action: alleycat-rule-errors.jsonl)"
    )


def test_the_stack_line_counts_in_words_and_says_when_the_lag_is_not_known() -> None:
    from simulator.backend.cli import _stack_line

    rule = {"received": 3, "written": 3, "retried": 0, "error_action": 0, "pending": 0}
    report = {"messages": 3, "duplicates": 1, "rejected": 0, "published": 1, "races": 1,
              "lag_ms": None}  # fmt: skip
    line = _stack_line({"rule": rule, "standings": report})
    assert "1 duplicate, " in line and "1 race, " in line and line.endswith("lag unknown")
    report["lag_ms"] = 1200
    assert _stack_line({"rule": rule, "standings": report}).endswith("lag 1,200 ms")
    # Once a bike has tried to enrol, the line says how enrolment went.
    enrolment = {"certificates": 2, "registered": 1, "refused": 1}
    line = _stack_line({"rule": rule, "standings": report, "enrolment": enrolment})
    assert line.endswith("lag 1,200 ms | enrolment: 1 registered, 1 refused")
