"""The live panel of ``simulate --via mqtt``: a pure function of a snapshot of the fleet.

Laid out as the Kinesis dashboard is (:mod:`simulator.report.dashboard`): the figures in as many
columns as the width holds, none of them cut, so it fits 80x24 with room to spare; a bar shows
how many riders are connected. The snapshot is taken by :meth:`PanelState.take` from the fleet's
counts; rates are worked out between two snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from simulator.report.dashboard import bar, clock, figure, figure_grid

if TYPE_CHECKING:
    from simulator.mqtt.fleet import MqttFleet


@dataclass(frozen=True, slots=True, kw_only=True)
class PanelState:
    """What the panel shows, at one moment."""

    at: float
    """Monotonic seconds when it was taken."""
    elapsed: float
    duration: int
    qos: int
    riders: int
    brokers: int
    open: int
    connecting: int
    refused: int
    connects: int
    connect_failures: int
    reconnects: int
    disconnects: int
    generated: int
    published: int
    acked: int
    sent_unacknowledged: int
    in_flight: int
    held: int
    dropped: int
    puback_p50: float
    puback_p99: float
    connect_p50: float
    connect_p99: float

    @classmethod
    def take(cls, run: MqttFleet, *, at: float, elapsed: float) -> PanelState:
        """The fleet's figures now."""
        c = run.counts
        return cls(
            at=at, elapsed=elapsed, duration=run.fleet.duration, qos=run.options.qos,
            riders=len(run.riders), brokers=len(run.summary_brokers()), open=run.open_connections,
            connecting=run.connecting, refused=len(run.refused), connects=c.connects,
            connect_failures=c.connect_failures, reconnects=c.reconnects,
            disconnects=c.disconnects, generated=c.generated, published=c.published,
            acked=c.acked, sent_unacknowledged=c.sent_unacknowledged, in_flight=run.in_flight,
            held=run.held, dropped=c.dropped, puback_p50=run.latency.percentile(50),
            puback_p99=run.latency.percentile(99),
            connect_p50=run.connect_latency.percentile(50),
            connect_p99=run.connect_latency.percentile(99),
        )  # fmt: skip


def _rate(now: PanelState, before: PanelState | None, field: str) -> float:
    if before is None or now.at <= before.at:
        return 0.0
    change: Any = getattr(now, field) - getattr(before, field)
    return float(change) / (now.at - before.at)


def render_panel(now: PanelState, before: PanelState | None, width: int = 80) -> Panel:
    """The panel for ``now`` (rates since ``before``), ``width`` cells wide at most."""
    inner = max(20, width - 4)
    connected = now.open / now.riders if now.riders else 0.0
    b = "s" if now.brokers != 1 else ""
    header = Text.assemble(
        ("connected ", "dim"),
        (f"{now.open:,}/{now.riders:,} ", "bold"),
        bar(connected, max(10, min(30, inner - 40))),
        (f"  {now.brokers} broker{b}, QoS {now.qos}", "dim"),
    )
    acked = (
        figure("PUBACKs", f"{now.acked:,}")
        if now.qos == 1
        else figure("sent (no ack)", f"{now.sent_unacknowledged:,}")
    )
    figures = [
        figure("connecting", f"{now.connecting:,}"),
        figure("failed", f"{now.connect_failures:,}", alert=now.connect_failures > 0),
        figure("refused riders", f"{now.refused:,}", alert=now.refused > 0),
        figure("reconnects", f"{now.reconnects:,}"),
        figure("disconnects", f"{now.disconnects:,}", alert=now.disconnects > 0),
        figure("connects/s", f"{_rate(now, before, 'connects'):,.0f}"),
        figure("generated", f"{now.generated:,}"),
        figure("publishes", f"{now.published:,}"),
        figure("publishes/s", f"{_rate(now, before, 'published'):,.0f}"),
        acked,
        figure("in flight", f"{now.in_flight:,}"),
        figure("held", f"{now.held:,}", alert=now.held > 0),
        figure("dropped", f"{now.dropped:,}", alert=now.dropped > 0),
        figure("PUBACK p50", f"{now.puback_p50:,.0f} ms"),
        figure("p99", f"{now.puback_p99:,.0f} ms"),
        figure("connect p50", f"{now.connect_p50:,.0f} ms"),
        figure("p99", f"{now.connect_p99:,.0f} ms"),
    ]
    title = f"alleycat simulate --via mqtt  {clock(now.elapsed)} / {clock(now.duration)}"
    return Panel(
        Group(header, Text(), *figure_grid(figures, inner)),
        title=title,
        title_align="left",
        box=box.ROUNDED,
        width=min(width, 100),
    )
