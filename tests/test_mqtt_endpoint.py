"""An MQTT endpoint that cannot be a host name: one line and exit 2, in every MQTT command.

``host:port`` or a URL would otherwise reach awscrt, which fails to resolve it and retries
forever; the commands run as processes, so a command that hangs fails its test by the timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alleycat_rider.config import check_mqtt_host

RIDE = ["ride", "--racer-id", "1", "--insecure", "--qos", "0", "--sensor", "mock"]
SIMULATOR = {
    "simulate": ["simulate", "--via", "mqtt", "--riders", "1", "--duration", "5", "--plain"],
    "rule": ["rule", "--plain", "--endpoint-url", "http://127.0.0.1:9"],
    "standings": ["standings", "--plain", "--endpoint-url", "http://127.0.0.1:9"],
}


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ALLEYCAT_"))}
    return subprocess.run(
        [sys.executable, "-m", "alleycat", *args], capture_output=True, text=True, timeout=30,
        env={**clean, "HOME": str(tmp_path), **env}, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize("source", ["flag", "environment", "config file"])
@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("127.0.0.1:8883", "is a host and a port: give the host alone (127.0.0.1) and the port"),
        ("mqtts://127.0.0.1", "is a URL, not a host name: give the host alone (127.0.0.1)"),
    ],
)
def test_ride_refuses_an_endpoint_with_a_port_or_a_scheme(
    endpoint: str, says: str, source: str, tmp_path: Path
) -> None:
    args, env = list(RIDE), {}
    if source == "flag":
        args += ["--endpoint", endpoint]
    elif source == "environment":
        env["ALLEYCAT_ENDPOINT"] = endpoint
    else:
        (tmp_path / "rider.toml").write_text(f'endpoint = "{endpoint}"\n')
        args += ["--config", str(tmp_path / "rider.toml")]
    completed = run(args, tmp_path, **env)
    assert completed.returncode == 2, completed.stderr
    name = {"flag": "--endpoint", "environment": "ALLEYCAT_ENDPOINT"}.get(source, "endpoint in")
    port = {"flag": "--port", "environment": "ALLEYCAT_PORT"}.get(source, "port =")
    [line] = completed.stderr.splitlines()
    assert line.startswith(f"Error: {name}") and says in line
    assert f"with {port}" in line


@pytest.mark.parametrize("command", sorted(set(SIMULATOR) - {"simulate"}))
def test_the_simulators_mqtt_commands_refuse_it_too(command: str, tmp_path: Path) -> None:
    completed = run([*SIMULATOR[command], "--mqtt-endpoint", "127.0.0.1:8883"], tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--mqtt-endpoint': '127.0.0.1:8883' is a host and a port: "
        "give the host alone (127.0.0.1) and the port with --mqtt-port 8883"
    )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "a1b2c3-ats.iot.eu-west-1.amazonaws.com", "::1", "bike_1."]
)
def test_host_names_and_addresses_pass(host: str) -> None:
    assert check_mqtt_host(host) == host


@pytest.mark.parametrize(
    "value", ["", "bad host", "-bike", "a..b", "[::1]:8883", "host/path", "x" * 64 + ".com"]
)
def test_what_cannot_be_a_host_name_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        check_mqtt_host(value)


def test_the_fleet_takes_brokers_as_host_and_port_but_refuses_a_url(tmp_path: Path) -> None:
    # simulate --via mqtt deals riders over HOST:PORT,HOST:PORT (tests/simulator/mqtt).
    url = "mqtts://127.0.0.1:8883"
    completed = run([*SIMULATOR["simulate"], "--mqtt-endpoint", url], tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--mqtt-endpoint': {url!r} is a URL, not a host name: give "
        "the host alone (127.0.0.1) and the port with --mqtt-port 8883"
    )
