"""What the rider sees: the panel, and the JSON log lines an operator reads."""

from __future__ import annotations

import functools
import io
import json
import threading
from collections.abc import Callable

from rich.console import Console

from alleycat_rider.agent.display import (
    AgentStatus,
    JsonLogReporter,
    PanelReporter,
    make_reporter,
    render_panel,
    standings_text,
)
from alleycat_rider.agent.loop import Agent
from alleycat_rider.config import load_config
from alleycat_rider.core.standings import Standings
from alleycat_rider.mqtt import Connected, EventSink, PublishDone, Received, Subscribed
from alleycat_rider.sensors.base import SensorOptions
from alleycat_rider.sensors.mock import MockSensor


def standings(place: int | None, riders: int = 14) -> Standings:
    return Standings(
        race_id="race-1",
        class_id=1,
        timestamp_ms=0,
        riders=riders,
        place=place,
        output=150.0,
        leader_output=160.0,
    )


def render(status: AgentStatus) -> str:
    console = Console(width=100, color_system=None, record=True, file=io.StringIO())
    console.print(render_panel(status))
    return console.export_text()


def test_the_panel_shows_the_ride_the_link_the_spool_and_the_place() -> None:
    status = AgentStatus(
        name="Ada",
        racer_id=101,
        class_id=2,
        cadence=72.5,
        resistance=50.0,
        output=123.4,
        race_id=5985743,
        second=42,
        connection="offline",
        spool_depth=17,
        sent=40,
        acked=30,
        standings=standings(2),
    )
    text = render(status)
    for expected in (
        "Ada #101, class 2", "72.5 rpm", "50.0", "123.4", "42/300", "5985743", "offline",
        "17 unacked", "2nd of 14 (leader 160.0)", "40 (30 acked, 0 dropped)",
    ):  # fmt: skip
        assert expected in text, expected


def test_the_panel_before_the_first_second_has_placeholders() -> None:
    text = render(AgentStatus(name="Bo", racer_id=1, class_id=1, qos=0))
    assert "connecting" in text
    assert "no results yet" in text
    assert "QoS 0, not spooled" in text


def test_places_read_as_ordinals() -> None:
    assert standings_text(standings(1)).startswith("1st of")
    assert standings_text(standings(3)).startswith("3rd of")
    assert standings_text(standings(11)).startswith("11th of")
    assert standings_text(standings(22)).startswith("22nd of")
    assert standings_text(standings(None, riders=5)) == "not placed yet, 5 riders"
    assert standings_text(standings(None, riders=1)) == "not placed yet, 1 rider"


def test_a_json_log_line_has_timestamp_level_service_message_and_fields() -> None:
    out = io.StringIO()
    reporter = JsonLogReporter(out, clock=lambda: 1764186600.123)
    reporter.event("warning", "disconnected", reason="AWS_ERROR_MQTT_UNEXPECTED_HANGUP")
    reporter.event("debug", "message", uuid="u")  # below the level: not written
    (line,) = out.getvalue().splitlines()
    assert json.loads(line) == {
        "timestamp": "2025-11-26T19:50:00.123Z",
        "level": "warning",
        "service": "alleycat-rider",
        "message": "disconnected",
        "reason": "AWS_ERROR_MQTT_UNEXPECTED_HANGUP",
    }


def test_status_lines_come_at_the_status_interval() -> None:
    out = io.StringIO()
    now = [0.0]
    reporter = JsonLogReporter(out, status_interval=60, monotonic=lambda: now[0])
    status = AgentStatus(name="Ada", racer_id=101, class_id=1, spool_depth=3)
    for second in range(121):
        now[0] = float(second)
        reporter.update(lambda: status)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["status", "status"]
    assert lines[0]["spool_depth"] == 3


def test_without_a_terminal_the_agent_logs_json_lines() -> None:
    reporter = make_reporter("auto", level="info", status_interval=0, stream=io.StringIO())
    assert isinstance(reporter, JsonLogReporter)


def _ride_status(sent: int, acked: int, spool: int, **overrides: object) -> AgentStatus:
    fields: dict[str, object] = dict(
        name="Ada", racer_id=101, class_id=2, race_id=5985743, second=sent,
        connection="connected", spool_depth=spool, sent=sent, acked=acked,
    )  # fmt: skip
    fields.update(overrides)
    return AgentStatus(**fields)  # type: ignore[arg-type]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _panel_reporter() -> tuple[PanelReporter, io.StringIO, _Clock]:
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None, force_terminal=True)
    clock = _Clock()
    return PanelReporter(console=console, monotonic=clock), out, clock


def _last_panel(out: io.StringIO) -> str:
    return out.getvalue().rsplit("Alleycat - ", 1)[-1]


def test_on_a_healthy_link_the_message_just_sent_is_in_flight_not_unacked() -> None:
    reporter, out, clock = _panel_reporter()
    for second in range(1, 23):
        # Each message is acked within the second; the panel is drawn right after a publish.
        reporter.update(functools.partial(_ride_status, second, second - 1, 1))
        clock.now += 1.0
    panel = _last_panel(out)
    assert "1 in flight" in panel
    assert "unacked" not in panel
    assert "22 (21 acked, 1 in flight, 0 dropped)" in panel
    reporter.close()


def test_messages_unacked_for_over_a_second_are_unacked() -> None:
    reporter, out, clock = _panel_reporter()
    for second in range(1, 6):
        reporter.update(functools.partial(_ride_status, second, 1, second - 1))
        clock.now += 1.0
    assert "3 unacked, 1 in flight" in _last_panel(out)
    reporter.close()


def test_on_stop_the_panel_shows_the_final_state() -> None:
    reporter, out, clock = _panel_reporter()
    final = [_ride_status(22, 21, 1)]
    reporter.update(lambda: final[0])
    final[0] = _ride_status(22, 22, 0)  # the last PUBACK arrived while stopping
    reporter.close()
    panel = _last_panel(out)
    assert "stopped" in panel and "connected" not in panel
    assert "empty, all acked" in panel
    assert "22 (22 acked, 0 dropped)" in panel


def test_a_stop_with_messages_unacked_says_the_spool_keeps_them() -> None:
    text = render_panel(_ride_status(30, 27, 3), stopped=True)
    console = Console(width=100, color_system=None, record=True, file=io.StringIO())
    console.print(text)
    assert "3 unacked, kept for the next ride" in console.export_text()


class Recorder:
    """A reporter that keeps what the agent reported, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []
        self._changed = threading.Condition()

    def event(self, level: str, message: str, **fields: object) -> None:
        with self._changed:
            self.log.append(("event", message))
            self._changed.notify_all()

    def update(self, snapshot: Callable[[], AgentStatus]) -> None:
        with self._changed:
            self.log.append(("update", snapshot().standings))
            self._changed.notify_all()

    def close(self) -> None:
        pass

    def wait_for(self, entry: tuple[str, object]) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: entry in self.log, 10), self.log


class Link:
    """A broker that takes everything at once."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def start(self) -> None:
        self.sink(Connected())

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        self.sink(PublishDone(token=token, delivered=True, rejected=False, code="SUCCESS"))

    def subscribe(self, topic: str) -> None:
        self.sink(Subscribed(topic=topic, granted=True, code="GRANTED_QOS_0"))

    def stop(self, timeout: float = 5.0) -> None:
        pass


def test_the_panel_shows_new_standings_as_soon_as_the_log_does() -> None:
    config = load_config(
        {"endpoint": "127.0.0.1", "racer_id": 101, "class_id": 2, "qos": 0},
        {"HOME": "/nonexistent"},
    )
    reporter = Recorder()
    links: list[Link] = []

    def link(sink: EventSink) -> Link:
        links.append(Link(sink))
        return links[0]

    agent = Agent(
        config, sensor=MockSensor(SensorOptions(kind="mock", seed=1)), link_factory=link,
        spool=None, reporter=reporter,
    )  # fmt: skip
    rider = threading.Thread(target=agent.run)
    rider.start()
    try:
        reporter.wait_for(("event", "message"))
        results = {"msg": "results", "classId": "2", "raceId": "race-1", "ts": "1",
                   "results": json.dumps({"101": 150.0, "102": 160.0})}  # fmt: skip
        links[0].sink(Received(topic="alleycat-subscribe", payload=json.dumps(results).encode()))
        reporter.wait_for(("event", "standings"))
    finally:
        agent.request_stop()
        rider.join(10)
    shown = reporter.log[reporter.log.index(("event", "standings")) + 1]
    assert shown[0] == "update"
    assert isinstance(shown[1], Standings) and (shown[1].place, shown[1].leader_output) == (2, 160)
