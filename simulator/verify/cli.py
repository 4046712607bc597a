"""``alleycat verify``: read a stream back from the start and check every ride message arrived."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from alleycat_rider.plural import counted
from simulator.cli_options import aws_options, parse_moment
from simulator.engine.keys import KEYLESS, PartitionKeyStrategy
from simulator.engine.sink import Shard
from simulator.errors import SimulatorError
from simulator.verify.check import ShardRule, StreamRecord, StreamVerifier, VerifyReport

#: Records asked for per GetRecords call (the Kinesis maximum).
GET_RECORDS_LIMIT = 10_000
#: Empty reads in a row, while the shard still reports being behind, before giving up on it.
MAX_EMPTY_READS = 1_000
#: Seconds between empty reads of a shard still behind (GetRecords: 5 calls/s per shard).
EMPTY_READ_PAUSE = 0.2
#: Attempts at one call that fails in a way that can pass (throttling, timeouts).
READ_ATTEMPTS = 8


def _parse_since(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.datetime | None:
    if value is None:
        return None
    moment = parse_moment(value)
    if moment > dt.datetime.now(dt.UTC):
        raise click.BadParameter("the time is in the future")
    return moment


class ShardReader:
    """Reads every record of a stream's shards, from the start or from a moment.

    Args:
        client: A Kinesis client.
        stream: The stream's name.
        since: Read records that arrived at or after this moment; None for all.
        sleep: Waits between retries (injectable for tests).
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        since: dt.datetime | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._stream = stream
        self._since = since
        self._sleep = sleep

    def records(self, shard: Shard) -> Iterator[StreamRecord]:
        """Every record of ``shard``, until it is read to its latest record (or its end)."""
        request: dict[str, Any] = {"StreamName": self._stream, "ShardId": shard.shard_id}
        if self._since is None:
            request["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            request["ShardIteratorType"] = "AT_TIMESTAMP"
            request["Timestamp"] = self._since
        iterator = self._call("get_shard_iterator", **request).get("ShardIterator")
        empty_reads = 0
        while iterator:
            page = self._call("get_records", ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            found = page.get("Records", [])
            for record in found:
                yield StreamRecord(
                    shard_id=shard.shard_id,
                    sequence_number=record["SequenceNumber"],
                    partition_key=record.get("PartitionKey") or "",
                    data=bytes(record["Data"]),
                )
            iterator = page.get("NextShardIterator")
            if found:
                empty_reads = 0
                continue
            # An empty page at the tip means the shard is read; AWS may also return empty
            # pages while still behind, so keep going then, within a bound.
            if int(page.get("MillisBehindLatest", 0)) == 0:
                return
            empty_reads += 1
            if empty_reads >= MAX_EMPTY_READS:
                print(
                    f"stopped reading {shard.shard_id} after {empty_reads} empty reads, "
                    f"{page['MillisBehindLatest']} ms behind its latest record",
                    file=sys.stderr,
                )
                return
            self._sleep(EMPTY_READ_PAUSE)

    def _call(self, method: str, **kwargs: Any) -> Any:
        from simulator.sinks.kinesis import call_kinesis

        return call_kinesis(
            self._client,
            method,
            stream=self._stream,
            attempts=READ_ATTEMPTS,
            sleep=self._sleep,
            **kwargs,
        )


def shard_rule_for(strategy: str | None) -> ShardRule:
    """How to check records written with the partition-key ``strategy`` (None: not known)."""
    if strategy is None:
        return ShardRule.MD5_OR_BALANCED
    if PartitionKeyStrategy(strategy) is PartitionKeyStrategy.BALANCED:
        return ShardRule.BALANCED
    if PartitionKeyStrategy(strategy) in KEYLESS:
        return ShardRule.SERVICE
    return ShardRule.MD5


def verify_stream(
    client: Any,
    stream: str,
    *,
    since: dt.datetime | None = None,
    shard_rule: ShardRule = ShardRule.MD5_OR_BALANCED,
    progress: bool = True,
) -> VerifyReport:
    """Read every shard of ``stream`` (closed ones too) and check its messages.

    ``balanced`` dealt riders over the shards open when the stream was written: taken to be
    the shards open now (records on shards closed since are not checked against the deal).

    Raises:
        FatalSinkError: The stream cannot be read (one line saying what to do).
    """
    from simulator.sinks.kinesis import StreamOpener

    opener = StreamOpener(client, stream, endpoint=client.meta.endpoint_url)
    shards = opener.shards(open_only=False)
    dealt_over = (
        None if shard_rule in (ShardRule.MD5, ShardRule.SERVICE) else opener.shards(open_only=True)
    )
    verifier = StreamVerifier(stream, shards, shard_rule=shard_rule, dealt_over=dealt_over)
    reader = ShardReader(client, stream, since=since)
    for shard in shards:
        before = verifier.records
        verifier.add_all(reader.records(shard))
        if progress:
            read = counted(verifier.records - before, "record")
            print(f"read {shard.shard_id}: {read}", file=sys.stderr)
    return verifier.report()


def render_report(report: VerifyReport) -> Any:
    """The report as rich tables for a terminal."""
    from rich.console import Group
    from rich.table import Table

    totals = Table(title=f"Stream {report.stream}", show_header=False, title_justify="left")
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    for name, value in (
        ("records", report.records),
        ("ride messages", report.messages),
        ("unique uuids", report.unique),
        ("duplicates", report.duplicates),
        ("gaps (missing seconds)", report.gaps),
        ("malformed", report.malformed),
        ("KPL aggregates", report.aggregated),
        (f"off its shard ({report.shard_rule})", report.off_shard),
        ("shard not checkable", report.shard_unchecked),
    ):
        totals.add_row(name, f"{value:,}")
    races = Table(title="Races", title_justify="left")
    for column in ("race", "riders", "rider races", "messages", "unique", "duplicates", "gaps"):
        races.add_column(column, justify="right")
    for race in report.races:
        counts = (
            race.riders,
            race.rider_races,
            race.messages,
            race.unique,
            race.duplicates,
            race.gaps,
        )
        races.add_row(str(race.race_id), *(f"{count:,}" for count in counts))
    shards = Table(title="Shards", title_justify="left")
    shards.add_column("shard")
    shards.add_column("records", justify="right")
    for shard in report.shards:
        shards.add_row(shard.shard_id, f"{shard.records:,}")
    notes = [f"gap: {line}" for line in report.gap_examples]
    notes += [f"malformed: {line}" for line in report.malformed_examples]
    return Group(totals, races, shards, *notes)


EXAMPLES = """
\b
Examples:
  # What `alleycat simulate --stream alleycat` wrote to a local stream
  alleycat verify --stream alleycat --endpoint-url http://127.0.0.1:4567
\b
  # A stream on AWS from a given time, as JSON
  alleycat verify --stream alleycat --region eu-west-1 --since 2026-11-26T18:00:00Z --json
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--stream", required=True, metavar="NAME", help="The Kinesis stream to read.")
@aws_options
@click.option(
    "--since",
    callback=_parse_since,
    default=None,
    metavar="TIME",
    help="Read records that arrived from this time (epoch seconds or ISO 8601); default all.",
)
@click.option(
    "--partition-key",
    "strategy",
    type=click.Choice([s.value for s in PartitionKeyStrategy]),
    default=None,
    help="The strategy the stream was written with (alleycat simulate --partition-key), "
    "for the off_shard check; default: either rule.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout."
)
def verify(
    stream: str,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    since: dt.datetime | None,
    strategy: str | None,
    as_json: bool,
) -> None:
    """Read a stream back and check that every ride message arrived.

    Reads every shard from the start (or from --since) to its latest record, unpacks KPL
    aggregates, and reports per race window (raceId): messages, unique uuids, duplicates (a
    uuid seen more than once: what a retried request can leave), gaps (seconds missing between
    a rider's first and last message of a race; races shorter than the 5-minute window are
    told apart by their start) and malformed records, with the records read from each shard.

    \b
    off_shard counts records on a shard their strategy does not put them on:
      random, time, class, racer  the shard holding the MD5 of the partition key
      balanced                    racer id 100+i on the i-th open shard in hash-key
                                  order, mod the shard count (GetRecords does not
                                  return the ExplicitHashKey, so MD5 cannot tell)
      auto                        not checked: the stream placed records itself
      (not given)                 off_shard only when neither rule fits; a record
                                  without a partition key only by the balanced rule

    Exits 1 when there are gaps or malformed records, or when most records are off their
    shard: the stream was then likely written with another --partition-key.
    """
    from simulator.sinks.kinesis import make_client

    try:
        client = make_client(region=region, profile=profile, endpoint_url=endpoint_url)
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        report = verify_stream(client, stream, since=since, shard_rule=shard_rule_for(strategy))
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        from rich.console import Console

        Console().print(render_report(report))
    if not report.ok:
        raise click.ClickException("; ".join(report.problems()))
