"""`alleycat ride` against a real mosquitto (mutual TLS) with a damaged spool, and on a full disk.

A damaged spool: every message whose bytes survive in it reaches the broker after the restart,
and the agent's warning counts what was recovered. A disk that fills up while the broker is
down: after a stop, and a restart with room and the broker up, every message made is delivered.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.agent.spool import DEFAULT_SPOOL_RESERVE
from alleycat_rider.config import load_config
from alleycat_rider.core.message import RideMessage
from alleycat_rider.errors import ConfigError
from tests.alleycat_rider.test_agent_broker import TOPIC, agent, agent_args, uuids
from tests.alleycat_rider.test_spool_recovery import damaged_spool, fill, small_disk
from tests.servers.mosquitto import MqttClient, RunningBroker

__all__ = ["small_disk"]  # the fixture, used here by name

CASES = [
    "flipped byte mid-log",
    pytest.param("random bytes over the log", marks=pytest.mark.e2e),
    pytest.param("log cut in half", marks=pytest.mark.e2e),
    pytest.param("database cut in half", marks=pytest.mark.e2e),
]


def wait_for_all(
    subscriber: MqttClient,
    wanted: set[Any],
    *,
    key: Callable[[bytes], Any] = lambda payload: payload,
    timeout: float = 30.0,
) -> None:
    """Wait until the subscriber has received everything in ``wanted`` (as ``key`` sees it)."""
    deadline = time.monotonic() + timeout
    while not wanted <= {key(p) for p in subscriber.messages} and time.monotonic() < deadline:
        subscriber.wait_for(len(subscriber.messages) + 1, timeout=1.0)


@pytest.mark.parametrize("kind", CASES)
def test_every_message_whole_in_a_damaged_spool_is_delivered_after_the_restart(
    mqtt_broker: RunningBroker, tmp_path: Path, kind: str
) -> None:
    path, made, whole, kept = damaged_spool(tmp_path, kind)
    with (
        mqtt_broker.subscriber(TOPIC) as subscriber,
        agent(agent_args(mqtt_broker, path)) as rider,
    ):
        starting = rider.wait_for("starting")
        rider.wait_for("connected")
        wait_for_all(subscriber, whole)
        assert rider.stop() == 0
        received = list(subscriber.messages)
    assert starting["spool_depth"] == len(whole)
    assert whole <= set(received)  # every message whose bytes survive
    own = set(rider.produced())
    assert {p for p in received if RideMessage.from_json(p).uuid not in own} <= set(made)
    assert len(uuids(received)) == len(set(uuids(received)))  # each once
    warnings = [line for line in rider.lines if line["message"].startswith("the spool ")]
    if kind == "log cut in half":
        assert warnings == []  # a torn write: SQLite keeps everything before the cut
        return
    [warning] = warnings
    assert warning["level"] == "warning"
    assert warning["recovered"] == len(whole) - kept > 0
    assert 0 <= warning["unreadable"] <= len(made) - len(whole)


@pytest.mark.e2e
def test_a_disk_that_fills_up_while_the_broker_is_down_loses_nothing(
    mqtt_broker: RunningBroker, small_disk: Callable[[str], Path]
) -> None:
    disk = small_disk("8m")
    spool = disk / "spool.db"
    mqtt_broker.stop()
    with agent(agent_args(mqtt_broker, spool)) as first:
        first.wait_for("message", count=3)
        filler = fill(disk)
        assert os.statvfs(disk).f_bavail == 0
        made = len(first.events("message"))
        first.wait_for("message", count=made + 5)  # riding on a full disk
        assert first.stop(signal.SIGTERM) == 0
        produced = first.produced()
    stopped = first.events("stopped")[0]
    assert stopped["produced"] == len(produced) >= 8
    assert stopped["in_memory"] == 0 and stopped["unspooled"] == 0
    assert not [line for line in first.lines if line["level"] == "error"]
    filler.unlink()
    mqtt_broker.start()
    with (
        mqtt_broker.subscriber(TOPIC) as subscriber,
        agent(agent_args(mqtt_broker, spool)) as second,
    ):
        assert second.wait_for("starting")["spool_depth"] == len(produced)
        wait_for_all(subscriber, set(produced), key=lambda p: RideMessage.from_json(p).uuid)
        assert second.stop() == 0
        received = list(subscriber.messages)
    assert set(produced) <= set(uuids(received))


def test_a_disk_without_room_for_the_reserve_is_one_line_and_exit_1(
    mqtt_broker: RunningBroker, small_disk: Callable[[str], Path]
) -> None:
    disk = small_disk("1m")
    with agent(agent_args(mqtt_broker, disk / "spool.db")) as rider:
        status = rider.process.wait(30)
        rider.close()
    assert status == 1
    assert len(rider.stderr) == 1, rider.stderr
    line = rider.stderr[0]
    assert line.startswith(f"Error: cannot use the spool {disk / 'spool.db'}")
    assert "the disk is full: free some space" in line
    # Without a reserve it rides on the same disk.
    with agent([*agent_args(mqtt_broker, disk / "spool.db"), "--spool-reserve", "0"]) as rider:
        rider.wait_for("message", count=2)
        assert rider.stop() == 0


def test_the_reserve_comes_from_the_file_the_environment_and_the_flag(tmp_path: Path) -> None:
    toml = tmp_path / "rider.toml"
    toml.write_text('endpoint = "localhost"\nracer_id = 1\nspool_reserve = 60\n')
    assert load_config({}, {"HOME": "/h"}, toml).spool_reserve == 60
    env = {"HOME": "/h", "ALLEYCAT_SPOOL_RESERVE": "0"}
    assert load_config({}, env, toml).spool_reserve == 0
    assert load_config({"spool_reserve": 7200}, env, toml).spool_reserve == 7200
    assert load_config({}, {"HOME": "/h", "ALLEYCAT_ENDPOINT": "localhost", "ALLEYCAT_RACER_ID":
                            "1"}).spool_reserve == DEFAULT_SPOOL_RESERVE  # fmt: skip
    with pytest.raises(ConfigError, match="spool_reserve"):
        load_config({"spool_reserve": -1}, env, toml)
