"""How the backend services end: Ctrl-C exits 130 after the final counts, as shells expect."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.servers.kinesis import create_stream
from tests.simulator.backend.test_loop import wait_until

#: Real servers and the services as processes: run once, not on both builds.
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("service", ["rule", "standings"])
def test_ctrl_c_stops_a_service_with_its_final_counts_and_exit_130(
    service: str,
    services: Any,
    backend_broker: Any,
    kinesis_server: str,
    kinesis_client: Any,
    stream_name: str,
) -> None:
    create_stream(kinesis_client, stream_name, 1)
    running = services(
        [service, *backend_broker.options(f"alleycat-{service}"), "--stream", stream_name,
         "--endpoint-url", kinesis_server, "--json", "--status-interval", "0"],
        service,
    )  # fmt: skip
    wait_until(lambda: f"{service}: " in running.stderr, 30, service)
    assert running.stop(signal.SIGINT) == 130
    final = running.result()  # the counts came first: nothing was sent, so nothing went through
    assert final[{"rule": "received", "standings": "messages"}[service]] == 0
    assert "Traceback" not in running.stderr
