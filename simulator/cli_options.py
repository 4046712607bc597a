"""Options, parameter types and signal handling that several simulator commands share."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

import click

from alleycat_rider.bounds import finite, whole

F = TypeVar("F", bound=Callable[..., object])


def parse_moment(value: str) -> dt.datetime:
    """A moment given as epoch seconds or ISO 8601 (UTC when no zone is given).

    Raises:
        click.BadParameter: Neither form.
    """
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "give epoch seconds or an ISO 8601 time, e.g. 2026-11-26T18:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _endpoint_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from alleycat_rider.config import endpoint_url_param  # when a command runs, not at --help

    return endpoint_url_param(ctx, param, value)


def aws_options(command: F) -> F:
    """``--region``, ``--profile`` and ``--endpoint-url``, read from the standard AWS variables."""
    options = [
        click.option(
            "--region", envvar="AWS_REGION", default=None, help="AWS region of the stream."
        ),
        click.option("--profile", envvar="AWS_PROFILE", default=None, help="AWS profile to use."),
        click.option(
            "--endpoint-url",
            envvar="AWS_ENDPOINT_URL",
            default=None,
            metavar="URL",
            callback=_endpoint_url,
            help="A Kinesis-compatible endpoint, e.g. http://127.0.0.1:4567.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


#: The exit status of a run stopped by Ctrl-C, after its summary: 128 + SIGINT, as shells expect.
INTERRUPTED = 128 + signal.SIGINT


class StopSignal:
    """Ctrl-C or SIGTERM asking a run to stop: which one came, for the exit status."""

    def __init__(self) -> None:
        self.signum: int | None = None
        """The first of ``signal.SIGINT`` (Ctrl-C) or ``signal.SIGTERM``; ``None`` until then."""

    @contextlib.contextmanager
    def watch(
        self,
        stop: threading.Event | Callable[[], None],
        *,
        say: str | None = None,
        again_stops_at_once: bool = False,
    ) -> Iterator[StopSignal]:
        """Stop on Ctrl-C or SIGTERM (saying ``say`` on stderr), while the block runs.

        Args:
            stop: The event to set, or what to call, when the first signal comes.
            say: A line for stderr at each signal.
            again_stops_at_once: A second signal raises KeyboardInterrupt (a run that drains
                what it holds lets the user give up on the drain).
        """
        request = stop.set if isinstance(stop, threading.Event) else stop

        def handler(signum: int, _frame: FrameType | None) -> None:
            if self.signum is not None and again_stops_at_once:
                raise KeyboardInterrupt
            if say is not None:
                print(say, file=sys.stderr)
            if self.signum is None:
                self.signum = signum
            request()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def exit_if_interrupted(self) -> None:
        """End the command with :data:`INTERRUPTED` when Ctrl-C stopped it (SIGTERM exits 0).

        Raises:
            click.exceptions.Exit: Ctrl-C stopped the run; call it after the summary.
        """
        if self.signum == signal.SIGINT:
            raise click.exceptions.Exit(INTERRUPTED)


def stopped_by_signals(
    stop: threading.Event, *, say: str | None = None
) -> contextlib.AbstractContextManager[StopSignal]:
    """Set ``stop`` on Ctrl-C or SIGTERM (saying ``say`` on stderr), while the block runs.

    The block gets the :class:`StopSignal`, to exit 130 after the summary when Ctrl-C came.
    """
    return StopSignal().watch(stop, say=say)


def check_html(path: str) -> None:
    """Before a long run: ``--html FILE`` can be written there, and plotly is installed.

    Raises:
        click.UsageError: the folder is missing, or the ``report`` extra (exit 2).
    """
    from simulator.report.html import MissingPlotting, check_plotting

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"{path}: there is no folder {folder}", param_hint="'--html'")
    try:
        check_plotting()
    except MissingPlotting as exc:
        raise click.UsageError(str(exc)) from None


def write_html(path: str, page: str) -> None:
    """Write a report, and say where on stderr (stdout may carry the JSON)."""
    data = page.encode("utf-8")
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"wrote the HTML report to {path} ({len(data) / 1e6:.1f} MB)", err=True)


def on_demand_options(command: F) -> F:
    """How the built-in on-demand stream is sized: what AWS does not publish, and Advantage's
    warm throughput (see :class:`simulator.engine.capacity.OnDemandPolicy`)."""
    from simulator.engine.capacity import DEFAULT_ON_DEMAND_POLICY as policy

    options = [
        click.option(
            "--warm-throughput",
            type=finite(0, policy.max_write_mibps),
            default=0.0,
            metavar="MIBPS",
            help="On-demand Advantage: write capacity available at once (WarmThroughputMiBps).",
        ),
        click.option(
            "--scale-out-seconds",
            type=finite(0),
            default=policy.scale_out_seconds,
            show_default=True,
            metavar="SECONDS",
            help="Built-in on-demand stream: from a higher peak to the split that meets it. "
            "Assumed: AWS does not publish it.",
        ),
        click.option(
            "--on-demand-shards",
            type=whole(1, 1024),
            default=policy.initial_shards,
            show_default=True,
            metavar="N",
            help="Built-in on-demand stream: shards of a new stream. Assumed: AWS publishes "
            "its 4 MiB/s, not its shards.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def ramp_option(command: F) -> F:
    """``--ramp SECONDS``: riders join over that time (a race start)."""
    return click.option(
        "--ramp",
        type=whole(0),
        default=0,
        show_default=True,
        metavar="SECONDS",
        help="Riders join over this many seconds (0: all at once). How fast load arrives "
        "decides whether an on-demand stream throttles.",
    )(command)


def capacity_problem(
    *, strategy: str, on_demand: bool, advantage: bool, batching: str, warm_throughput: float
) -> str | None:
    """What is wrong with a capacity mode, key and batching asked together; None if nothing."""
    if strategy == "auto" and not on_demand:
        return (
            "--partition-key auto needs an on-demand stream: add --capacity on-demand "
            "(AWS refuses service-managed distribution on provisioned streams)"
        )
    if strategy == "auto" and batching != "per-second":
        return (
            f"--partition-key auto cannot be used with --batching {batching}: AWS warns that "
            "consumers may drop aggregated records on a stream that spreads records itself; "
            "use --batching per-second"
        )
    if warm_throughput and not advantage:
        return (
            "--warm-throughput needs --capacity on-demand-advantage (warm throughput comes "
            "with the account's minimum throughput commitment)"
        )
    return None
