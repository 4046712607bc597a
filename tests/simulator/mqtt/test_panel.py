"""The live panel of ``simulate --via mqtt`` on an 80x24 terminal."""

from __future__ import annotations

import dataclasses

from rich.console import Console

from simulator.mqtt.panel import PanelState, render_panel

BEFORE = PanelState(
    at=100.0, elapsed=58.0, duration=300, qos=1, riders=19_000, brokers=2, open=18_000,
    connecting=1_000, refused=0, connects=18_000, connect_failures=0, reconnects=0,
    disconnects=0, generated=1_000_000, published=999_000, acked=998_000,
    sent_unacknowledged=0, in_flight=1_000, held=0, dropped=0, puback_p50=2.0,
    puback_p99=40.0, connect_p50=120.0, connect_p99=900.0,
)  # fmt: skip


def rendered(now: PanelState, before: PanelState | None, width: int = 80) -> list[str]:
    console = Console(width=width, height=24, record=True, color_system=None)
    console.print(render_panel(now, before, width))
    return console.export_text().splitlines()


def test_the_panel_fits_80x24_with_every_figure_whole() -> None:
    now = dataclasses.replace(
        BEFORE, at=102.0, elapsed=60.0, open=18_990, connecting=10, refused=3, connects=18_990,
        connect_failures=1_234_567, reconnects=12_345, published=1_037_000, acked=1_036_500,
        held=2_500_000, dropped=1_000_000,
    )  # fmt: skip
    lines = rendered(now, BEFORE)
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for shown in (
        "connected 18,990/19,000", "2 brokers, QoS 1", "connecting 10", "failed 1,234,567",
        "refused riders 3", "reconnects 12,345", "connects/s 495", "publishes 1,037,000",
        "publishes/s 19,000", "PUBACKs 1,036,500", "in flight 1,000", "held 2,500,000",
        "dropped 1,000,000", "PUBACK p50 2 ms", "p99 40 ms", "connect p50 120 ms",
        "p99 900 ms", "1:00 / 5:00",
    ):  # fmt: skip
        assert shown in text, shown


def test_qos_0_shows_what_was_sent_and_a_first_snapshot_no_rates() -> None:
    now = dataclasses.replace(BEFORE, qos=0, sent_unacknowledged=5_000, acked=0)
    text = "\n".join(rendered(now, None))
    assert "sent (no ack) 5,000" in text and "PUBACKs" not in text
    assert "connects/s 0" in text and "publishes/s 0" in text
