"""A bike with only the factory's claim files, against ``alleycat stack``: it enrols with the
stack's fleet provisioning, rides as the thing its template made, its rides reach the stream
under that thing name and its racer is checked by standings against the racer it enrolled for;
started again, it does not enrol again. The command it runs is the one the stack prints."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.alleycat_rider.test_agent_broker import agent
from tests.servers.ports import free_port

from .test_loop import read_stream, wait_until
from .test_stack_restart import RIDE_EXTRA, placed

#: Real servers and several processes, over tens of seconds: run once, not on both builds.
pytestmark = pytest.mark.e2e


def test_a_claim_only_bike_enrols_through_the_stack_rides_as_its_thing_and_enrols_once(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    client_map = tmp_path / "bikes.json"
    client_map.write_text("{}")  # no bike known before: enrolment tells standings the racer
    kinesis = f"http://127.0.0.1:{free_port()}"
    stack = services(
        ["stack", "--mqtt-port", str(free_port()), "--kinesis-port", kinesis.rsplit(":", 1)[1],
         "--certs", str(tmp_path / "certs"), "--workdir", str(tmp_path / "stack"),
         "--stamp-client-id", "--client-map", str(client_map), "--status-interval", "0.5"],
        "stack",
    )  # fmt: skip
    wait_until(lambda: "Alleycat is running" in stack.stdout_path.read_text(), 60, "the stack")
    [ride] = [
        words[2:]
        for words in map(shlex.split, stack.stdout_path.read_text().splitlines())
        if words[:2] == ["alleycat", "ride"] and "--claim-cert" in words
    ]
    assert "--cert" not in ride and ride[ride.index("--serial-number") + 1] == "SN-0001"

    with agent(ride + RIDE_EXTRA) as bike:
        assert bike.wait_for("enrolled")["thing_name"] == "SN-0001"
        assert bike.wait_for("starting")["topic"] == "alleycat-publish/SN-0001"
        bike.wait_for("message", count=3)
        # Standings place it: its racer (3) is the one it enrolled for, under --client-map.
        bike.wait_until(placed(bike, 1), timeout=30)
        assert bike.stop() == 0
        first = bike.events("stopped")[0]
    things = json.loads((tmp_path / "stack" / "things.json").read_text())
    assert things["things"] == {"SN-0001": {"racerId": "3"}}

    # Started again, riding as another racer than it enrolled for: standings reject its rides.
    at = ride.index("--racer-id") + 1
    as_another = [*ride[:at], "4", *ride[at + 1 :]]
    with agent(as_another + RIDE_EXTRA) as again:
        again.wait_for("connected")
        again.wait_for("message", count=len(again.events("message")) + 2)
        assert again.stop() == 0
        second = again.events("stopped")[0]
        assert again.events("enrolling") == []
    acked = first["acked"] + second["acked"]
    assert first["produced"] == first["acked"] >= 3 and second["acked"] >= 2

    def rides() -> list[dict[str, Any]]:
        return [r for r in read_stream(kinesis) if r.get("clientId") == "SN-0001"]

    wait_until(lambda: len(rides()) >= acked, 30, "the rides in the stream")
    records = rides()
    assert len(records) == acked
    assert sorted(r["racerId"] for r in records) == [3] * first["acked"] + [4] * second["acked"]
    wait_until(
        lambda: f"{second['acked']} rejected" in stack.stderr.splitlines()[-1],
        30,
        "standings to reject the rides as racer 4",
    )
    assert stack.stop() == 0
    assert "provisioning: SN-0001 enrolled with the template alleycat-bikes" in stack.stderr
    last = stack.stderr.splitlines()[-1]
    assert f"{second['acked']} rejected" in last
    assert last.endswith("| enrolment: 1 registered, 0 refused")
