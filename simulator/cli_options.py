"""Options and parameter types that several simulator commands share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import click

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


def endpoint_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check ``--endpoint-url`` (or ``AWS_ENDPOINT_URL``) is a URL: one line if not."""
    from alleycat_rider.config import check_endpoint_url

    if value is None:
        return None
    try:
        return check_endpoint_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


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
            callback=endpoint_url,
            help="A Kinesis-compatible endpoint, e.g. http://127.0.0.1:4567.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
