"""kinesalite (a Kinesis-compatible server) started on 127.0.0.1 with a free port.

kinesalite 3.3.3 is installed from npm into ``tests/servers/kinesalite`` by ``scripts/test``;
``serve.js`` starts it bound to 127.0.0.1 only (its own CLI binds every interface). New streams
stay CREATING for 50 ms, so waiting for ACTIVE is exercised too. It never throttles.

Fixtures:

- ``kinesalite`` (session): the endpoint URL of a running kinesalite, stopped after the session.
- ``aws_test_env`` (function): the environment set up for boto3 and for the ``alleycat``
  subprocesses a test starts: dummy credentials, a region, no shared config files, no instance
  metadata lookups (no traffic leaves 127.0.0.1).
- ``kinesis_server`` (function): the kinesalite URL, with ``aws_test_env`` applied.
- ``kinesis_client`` (function): a boto3 Kinesis client on that server, closed afterwards.
- ``stream_name`` (function): a stream name no other test uses.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers.ports import free_port, wait_for_port

KINESALITE_DIR = Path(__file__).parent / "kinesalite"
#: Environment for boto3 and ``alleycat`` against the local server.
TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Variables that would point boto3 at real AWS accounts or other endpoints.
CLEARED_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)
_stream_numbers = itertools.count(1)


@contextmanager
def running_kinesalite(port: int | None = None) -> Iterator[str]:
    """Run kinesalite on 127.0.0.1 (a free port by default); yield its endpoint URL.

    Raises:
        RuntimeError: Node.js or the npm install of kinesalite is missing.
    """
    node = shutil.which("node")
    if node is None or not (KINESALITE_DIR / "node_modules" / "kinesalite").is_dir():
        raise RuntimeError(
            "kinesalite is not installed: run scripts/test (or `npm ci` in tests/servers/"
            "kinesalite) with Node.js on the PATH"
        )
    port = port or free_port()
    # A file, not a pipe: nobody reads kinesalite's stderr while it runs.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [node, str(KINESALITE_DIR / "serve.js"), str(port)],
            cwd=KINESALITE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            try:
                wait_for_port(port, timeout=15)
            except TimeoutError:
                process.kill()
                process.wait(timeout=5)
                errors.seek(0)
                said = errors.read().decode(errors="replace")
                raise RuntimeError(f"kinesalite did not start: {said}") from None
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def use_test_aws_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point boto3 (here and in child processes) at dummy credentials and nothing else."""
    for name in CLEARED_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))


@pytest.fixture(scope="session")
def kinesalite() -> Iterator[str]:
    """The endpoint URL of a kinesalite running for the whole session."""
    with running_kinesalite() as endpoint:
        yield endpoint


@pytest.fixture
def aws_test_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy AWS credentials and a region in the environment; no config files, no metadata."""
    use_test_aws_env(monkeypatch, tmp_path)


@pytest.fixture
def kinesis_server(kinesalite: str, aws_test_env: None) -> str:
    """The local Kinesis endpoint URL, with dummy AWS credentials in the environment."""
    return kinesalite


@pytest.fixture
def kinesis_client(kinesis_server: str) -> Iterator[Any]:
    """A boto3 Kinesis client on the local server, closed after the test."""
    import boto3

    client = boto3.client("kinesis", endpoint_url=kinesis_server, region_name="us-east-1")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> str:
    """A stream name unique in the session (the server outlives each test)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"{base}-{next(_stream_numbers)}"


def create_stream(client: Any, name: str, shards: int) -> None:
    """Create a stream and wait until it is ACTIVE."""
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 200}
    )
