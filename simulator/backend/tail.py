"""Following a stream as it grows: every shard, new shards after a reshard included.

A :class:`StreamTail` lists the stream's shards every few seconds and reads each one with
GetRecords, at most :data:`READS_PER_SECOND` times a second per shard (Kinesis allows five).
Where it starts on a shard:

- a shard with a stored position: just after the last record stored (a restart carries on);
- a shard open when the tail starts: ``LATEST`` or ``TRIM_HORIZON``, as asked;
- a shard that appears later (a reshard's children): its beginning, so nothing is skipped.

A tail given the stream's identity (:func:`stream_identity`) checks it at each listing: a
stream deleted and made again under it (a local Kinesis server restarted) is read from its
beginning, and :attr:`StreamTail.new_stream` tells the reader to start its state over.

A closed shard read to its end is reported ``done`` and never read again. How far behind the
reading is (:attr:`StreamTail.lag_ms`) is unknown until every shard has answered a read: a tail
that reads nothing never looks up to date. Errors that can pass
(throttling, a server restarting, an expired iterator) are retried; the others raise
:class:`~simulator.errors.FatalSinkError` with one line saying what to do.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator.backend.standings import ReadRecord
from simulator.errors import FatalSinkError, RetryableSinkError, SinkError
from simulator.sinks.kinesis import list_shards
from simulator.sinks.kinesis_errors import BotoCoreError, ClientError, translate_error

#: GetRecords calls per second per shard (Kinesis allows 5 per shard, shared by consumers).
READS_PER_SECOND = 4
#: Seconds between ListShards calls, to find the shards a reshard makes.
LIST_EVERY = 5.0
#: Records asked for per GetRecords call.
READ_LIMIT = 10_000
#: Longest pause after a failed read.
MAX_BACKOFF = 5.0


@dataclass(slots=True)
class _Shard:
    shard_id: str
    position: tuple[str, str | None]
    """Where a new iterator starts: a ShardIteratorType and, after a record, its number."""
    iterator: str | None = None
    next_read: float = 0.0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """What one GetRecords call gave."""

    shard_id: str
    records: list[ReadRecord]
    done: bool
    """The shard is closed and read to its end."""
    millis_behind: int


class StreamTail:
    """Reads a stream's shards as they grow; see the module doc.

    Args:
        client: A Kinesis client.
        stream: The stream's name.
        start: ``LATEST`` or ``TRIM_HORIZON``, for shards open at the start without a position.
        positions: The last sequence number stored per shard.
        done: Shards read to their end already.
        warn: Where passing trouble is reported, one line each time it starts.
        identity: The stream's :func:`stream_identity`, to notice it being made again.
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        start: str = "LATEST",
        positions: dict[str, str] | None = None,
        done: set[str] | None = None,
        warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
        monotonic: Callable[[], float] = time.monotonic,
        identity: str | None = None,
    ) -> None:
        self._client = client
        self.identity = identity
        self.new_stream: str | None = None
        """The identity of a stream made again under this tail, until the reader takes note
        (and sets it back to None): what was read before belongs to another stream."""
        self._stream = stream
        self._start = start
        self._positions = dict(positions or {})
        self._done = set(done or ())
        self._warn = warn
        self._monotonic = monotonic
        self._shards: dict[str, _Shard] = {}
        self._listed_at = float("-inf")
        self._first_listing = True
        self._behind: dict[str, int] = {}
        self._trouble: str | None = None

    @property
    def lag_ms(self) -> int | None:
        """How far the furthest-behind shard is from its tip, as Kinesis last said; None until
        every shard being read has answered once."""
        if self._first_listing or any(s not in self._behind for s in self._shards):
            return None
        return max(self._behind.values(), default=0)

    @property
    def shards(self) -> int:
        """Shards being read now."""
        return len(self._shards)

    def poll(self) -> list[Page]:
        """One read of each shard that is due; empty when none is."""
        now = self._monotonic()
        if now - self._listed_at >= LIST_EVERY:
            self._list_shards()
            self._listed_at = now
        pages = []
        for shard in list(self._shards.values()):
            if shard.next_read > now:
                continue
            page = self._read(shard)
            if page is not None:
                pages.append(page)
        return pages

    def _list_shards(self) -> None:
        if self.identity is not None and not self._first_listing:
            try:
                identity = stream_identity(self._client, self._stream)
            except SinkError:
                return  # the next listing will tell; reading the known shards goes on
            if identity != self.identity:
                self._start_over(identity)
        try:
            listed = list_shards(self._client, self._stream, open_only=False)
            open_ids = {s.shard_id for s in list_shards(self._client, self._stream)}
        except FatalSinkError:
            if self._first_listing:
                raise
            return  # the next listing will tell; reading the known shards goes on
        for shard in listed:
            shard_id = shard.shard_id
            if shard_id in self._shards or shard_id in self._done:
                continue
            position: tuple[str, str | None]
            if shard_id in self._positions:
                position = ("AFTER_SEQUENCE_NUMBER", self._positions[shard_id])
            elif self._first_listing:
                if shard_id not in open_ids and self._start == "LATEST":
                    continue  # closed before we started: nothing new will come
                position = (self._start, None)
            else:
                position = ("TRIM_HORIZON", None)
            self._shards[shard_id] = _Shard(shard_id, position)
        self._first_listing = False

    def _start_over(self, identity: str) -> None:
        """The stream was made again: forget its shards and read the new ones from the start."""
        self._warn(
            f"standings: stream {self._stream} was made again ({identity}): starting over from "
            "its beginning"
        )
        self.identity = self.new_stream = identity
        self._shards.clear()
        self._positions.clear()
        self._done.clear()
        self._behind.clear()

    def _iterator(self, shard_id: str, position: tuple[str, str | None]) -> str | None:
        kind, sequence = position
        request: dict[str, Any] = {
            "StreamName": self._stream,
            "ShardId": shard_id,
            "ShardIteratorType": kind,
        }
        if sequence is not None:
            request["StartingSequenceNumber"] = sequence
        response = self._call("get_shard_iterator", **request)
        iterator = response.get("ShardIterator")
        return str(iterator) if iterator else None

    def _read(self, shard: _Shard) -> Page | None:
        now = self._monotonic()
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard.shard_id, shard.position)
            response = self._call("get_records", ShardIterator=shard.iterator, Limit=READ_LIMIT)
        except _ExpiredIterator:
            shard.iterator = None
            return None
        except RetryableSinkError as exc:
            shard.failures += 1
            shard.next_read = now + min(MAX_BACKOFF, 0.25 * 2**shard.failures)
            if self._trouble is None:
                self._trouble = str(exc)
                self._warn(f"reading {self._stream} {shard.shard_id} failed, retrying: {exc}")
            return None
        if self._trouble is not None:
            self._warn(f"reading {self._stream} again")
            self._trouble = None
        shard.failures = 0
        records = [
            ReadRecord(str(r["SequenceNumber"]), bytes(r["Data"]))
            for r in response.get("Records", [])
        ]
        if records:
            shard.position = ("AFTER_SEQUENCE_NUMBER", records[-1].sequence_number)
        shard.iterator = response.get("NextShardIterator")
        behind = int(response.get("MillisBehindLatest", 0) or 0)
        self._behind[shard.shard_id] = behind
        done = shard.iterator is None
        if done:
            del self._shards[shard.shard_id]
            self._behind.pop(shard.shard_id, None)
            self._done.add(shard.shard_id)
        # A full page means more is waiting: read again as soon as Kinesis allows.
        shard.next_read = now + 1 / READS_PER_SECOND
        return Page(shard.shard_id, records, done, behind)

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExpiredIteratorException":
                raise _ExpiredIterator from exc
            error = translate_error(exc, stream=self._stream, endpoint=self._endpoint)
            raise error from exc
        except BotoCoreError as exc:
            error = translate_error(exc, stream=self._stream, endpoint=self._endpoint)
            raise error from exc

    @property
    def _endpoint(self) -> str | None:
        return getattr(getattr(self._client, "meta", None), "endpoint_url", None)


def stream_identity(client: Any, stream: str) -> str:
    """What tells this stream from another of the same name: its ARN and creation time.

    A stream deleted and made again (or the stream of a restarted local Kinesis server) has the
    same name and ARN, but not the same creation time; sequence numbers of one mean nothing in
    the other. Raises :class:`~simulator.errors.SinkError` as reading does.
    """
    try:
        summary = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    except (ClientError, BotoCoreError) as exc:
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
        raise translate_error(exc, stream=stream, endpoint=endpoint) from exc
    created = summary.get("StreamCreationTimestamp")
    when = created.isoformat() if hasattr(created, "isoformat") else str(created)
    return f"{summary.get('StreamARN', stream)} created {when}"


class _ExpiredIterator(Exception):
    """A shard iterator older than five minutes: get a new one from the stored position."""
