"""``alleycat stack`` stopped and started again on the same work folder, as a user does.

The bikes ride with the commands the stack prints, as printed: two at once, then one again after
the restart. The second stack's Kinesis server starts empty, so the standings state kept in the
work folder belongs to a stream that is gone: the backend must start over on the new stream and
read every record of it, and say so once.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.alleycat_rider.test_agent_broker import AgentProcess, agent
from tests.servers.ports import free_port

from .test_loop import wait_until

#: Real servers and several processes, over tens of seconds: run once, not on both builds.
pytestmark = pytest.mark.e2e

#: What the printed commands leave to the user: how the agent reports, and a seeded mock bike.
RIDE_EXTRA = ["--sensor", "mock", "--seed", "3", "--log-format", "json", "--log-level", "debug"]
STATUS = re.compile(r"records written ([\d,]+).*\| standings: ([\d,]+) read")


def start(services: Any, tmp_path: Path, name: str) -> Any:
    stack = services(
        ["stack", "--mqtt-port", str(free_port()), "--kinesis-port", str(free_port()),
         "--certs", str(tmp_path / "certs"), "--workdir", str(tmp_path / "stack"),
         "--status-interval", "1"],
        name,
    )  # fmt: skip
    wait_until(lambda: "Alleycat is running" in stack.stdout_path.read_text(), 60, "the stack")
    return stack


def printed_rides(stack: Any) -> dict[str, list[str]]:
    """The printed ``alleycat ride`` commands by client id, without ``alleycat ride``."""
    rides = {}
    for line in stack.stdout_path.read_text().splitlines():
        words = shlex.split(line)
        if words[:2] == ["alleycat", "ride"] and "--client-id" in words:
            rides[words[words.index("--client-id") + 1]] = words[2:]
    return rides


def placed(rider: AgentProcess, riders: int) -> Callable[[], bool]:
    """Whether ``rider`` has been placed among ``riders``."""
    return lambda: any(s["riders"] == riders and s["place"] for s in rider.events("standings"))


def written_and_read(stack: Any) -> tuple[int, int] | None:
    """Records the rule wrote and messages standings read, as the last status line says."""
    found = STATUS.findall(stack.stderr)
    if not found:
        return None
    written, read = found[-1]
    return int(written.replace(",", "")), int(read.replace(",", ""))


def test_a_restarted_stack_starts_standings_over_on_its_new_stream(
    tmp_path: Path, services: Any, aws_test_env: None
) -> None:
    first = start(services, tmp_path, "stack-1")
    rides = printed_rides(first)
    assert set(rides) == {"bike-1", "bike-2"}
    # Racers below a fleet's (100 and up), each bike its own spool.
    assert [ride[ride.index("--racer-id") + 1] for ride in rides.values()] == ["1", "2"]
    assert len({ride[ride.index("--spool") + 1] for ride in rides.values()}) == 2
    assert "(1 shard)" in first.stderr
    # Both printed commands at once, as printed: each bike has its own spool.
    with agent(rides["bike-1"] + RIDE_EXTRA) as one, agent(rides["bike-2"] + RIDE_EXTRA) as two:
        for rider in (one, two):
            rider.wait_for("message", count=5)
            rider.wait_until(placed(rider, 2), timeout=30)
        assert one.stop() == 0 and two.stop() == 0
    assert first.stop() == 0
    assert "starting over" not in first.stderr

    second = start(services, tmp_path, "stack-2")
    with agent(printed_rides(second)["bike-1"] + RIDE_EXTRA) as again:
        again.wait_for("message", count=5)
        # The rider is placed on what the new stream holds: itself alone.
        again.wait_until(placed(again, 1), timeout=30)
        assert again.stop() == 0
    # Every record of the new stream is read, from its first: none skipped, none of the old.
    wait_until(
        lambda: (counts := written_and_read(second)) is not None and counts[0] == counts[1] > 0,
        30,
        f"standings to read what the rule wrote: {written_and_read(second)}",
    )
    assert second.stop() == 0
    restarted = [line for line in second.stderr.splitlines() if "starting over" in line]
    assert len(restarted) == 1
    assert str(tmp_path / "stack" / "standings.db") in restarted[0]
