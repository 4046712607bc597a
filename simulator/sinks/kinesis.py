"""A real Kinesis stream through boto3: the only module of the simulator that imports boto3.

:class:`KinesisSink` writes PutRecords requests to AWS or to any Kinesis-compatible endpoint
(kinesalite, moto, LocalStack). Entries that fail inside a successful response are handed back to
the producer, which retries only those. A request that fails as a whole is translated once, here,
by :func:`translate_error`: into :class:`~simulator.errors.RetryableSinkError` when the same
request may pass later (throttling of the API, timeouts, connection errors, 5xx), or into
:class:`~simulator.errors.FatalSinkError` with one line saying what to do
(:mod:`simulator.sinks.kinesis_errors`).

botocore's own retries are switched off (``total_max_attempts=1``): a retry inside botocore would
be invisible to the run's counters (``failed_requests``, ``retries``), would hold a pipeline slot
through its own backoff, and would retry throttling the producer already paces with jitter.
Client-side parameter validation is off too: the producer keeps every request within Kinesis's
limits, the server validates anyway (its ValidationException is translated), and botocore's
check costs about 2 ms of CPU per 500-record request, on the core the run loop needs.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import boto3
from botocore.config import Config

from alleycat_rider.plural import counted
from simulator.engine.batching import Record
from simulator.engine.capacity import CapacityMode
from simulator.engine.sink import PutRecordsOutcome, RecordDistribution, Shard, StreamDescription
from simulator.errors import FatalSinkError
from simulator.sinks.json_wire import MismatchedAnswer, PutRecordsWire, outcome_from_answer
from simulator.sinks.kinesis_errors import BotoCoreError, ClientError, translate_error
from simulator.sinks.options import SinkOptions

#: Region assumed for a local endpoint when none is configured (local servers ignore it).
LOCAL_DEFAULT_REGION = "us-east-1"
#: Credentials signed with when a local endpoint is used and none are configured.
LOCAL_CREDENTIALS = ("alleycat-local", "local")
#: Seconds to wait for a stream to become ACTIVE (AWS usually takes well under a minute).
DEFAULT_ACTIVE_TIMEOUT = 300.0
#: Attempts at the calls that open a stream, when they fail in a way that can pass.
OPEN_ATTEMPTS = 4


#: Seconds to connect, and to wait for an answer, on every call.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30


def make_client(
    *,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    max_connections: int = 10,
) -> Any:
    """A Kinesis client with short timeouts and no retries of its own (see the module doc).

    Raises:
        FatalSinkError: The profile does not exist or no region is configured.
    """
    client, _credentials = _client_and_credentials(region, profile, endpoint_url, max_connections)
    return client


def _client_and_credentials(
    region: str | None, profile: str | None, endpoint_url: str | None, max_connections: int
) -> tuple[Any, Any]:
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        parameter_validation=False,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=max_connections,
        tcp_keepalive=True,
    )
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        if session.region_name is None and endpoint_url is not None:
            region = LOCAL_DEFAULT_REGION
        credentials = session.get_credentials()
        if _is_local(endpoint_url) and credentials is None:
            # A server on this machine checks no signature: no AWS account needed for it.
            session = boto3.session.Session(
                aws_access_key_id=LOCAL_CREDENTIALS[0],
                aws_secret_access_key=LOCAL_CREDENTIALS[1],
                region_name=region,
            )
            credentials = session.get_credentials()
        client = session.client(
            "kinesis", region_name=region, endpoint_url=endpoint_url, config=config
        )
        return client, credentials
    except BotoCoreError as exc:
        raise translate_error(exc, stream="", endpoint=endpoint_url) from exc


def _is_local(endpoint_url: str | None) -> bool:
    """Whether ``endpoint_url`` is a server on this machine."""
    if endpoint_url is None:
        return False
    from urllib.parse import urlsplit

    from alleycat_rider.config import is_loopback

    host = urlsplit(endpoint_url).hostname
    return host is not None and is_loopback(host)


def call_kinesis(
    client: Any,
    method: str,
    *,
    stream: str,
    attempts: int = OPEN_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> Any:
    """Call ``client.method(**kwargs)``, retrying failures that can pass with backoff.

    Args:
        client: A Kinesis client.
        method: The client method, e.g. ``"describe_stream_summary"``.
        stream: The stream the call is about, for messages.
        attempts: Calls at most.
        sleep: Waits between attempts (injectable for tests).
        **kwargs: The call's parameters.

    Raises:
        FatalSinkError: The call failed in a way retrying cannot fix, or on every attempt.
    """
    endpoint = client.meta.endpoint_url
    for attempt in range(attempts):
        try:
            return getattr(client, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            error = translate_error(exc, stream=stream, endpoint=endpoint)
            if isinstance(error, FatalSinkError) or attempt == attempts - 1:
                raise FatalSinkError(str(error)) from exc
        # Throttled reads (GetRecords: 5 calls/s per shard) and blips pass after a pause.
        sleep(min(2.0, 0.2 * 2**attempt) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def list_shards(
    client: Any,
    stream: str,
    *,
    open_only: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Shard]:
    """The stream's shards in hash-key order, following ListShards pagination.

    Args:
        client: A Kinesis client.
        stream: The stream's name.
        open_only: Leave out shards closed by resharding (they take no more writes).
        sleep: Waits between retries of a page.

    Raises:
        FatalSinkError: The shards cannot be listed.
    """
    shards: list[Shard] = []
    request: dict[str, Any] = {"StreamName": stream}
    while True:
        page = call_kinesis(client, "list_shards", stream=stream, sleep=sleep, **request)
        for shard in page.get("Shards", []):
            if open_only and "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
                continue
            hash_range = shard["HashKeyRange"]
            shards.append(
                Shard(
                    shard["ShardId"],
                    int(hash_range["StartingHashKey"]),
                    int(hash_range["EndingHashKey"]),
                )
            )
        token = page.get("NextToken")
        if not token:
            break
        request = {"NextToken": token}  # ListShards refuses StreamName with NextToken.
    return sorted(shards, key=lambda s: (s.starting_hash_key, s.shard_id))


class StreamOpener:
    """Creates a stream if asked, waits until it is writable, and reads its shards.

    Args:
        client: A Kinesis client.
        stream: The stream's name.
        endpoint: The endpoint, for messages.
        progress: Where waiting is reported (stderr by default).
        timeout: Seconds to wait for the stream to become ACTIVE.
        sleep: Waits between polls (injectable for tests).
        monotonic: The clock the timeout is measured on.
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        endpoint: str | None = None,
        progress: TextIO | None = None,
        timeout: float = DEFAULT_ACTIVE_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._stream = stream
        self._endpoint = endpoint
        self._progress = progress
        self._timeout = timeout
        self._sleep = sleep
        self._monotonic = monotonic

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``method`` with retries (see :func:`call_kinesis`)."""
        return call_kinesis(self._client, method, stream=self._stream, sleep=self._sleep, **kwargs)

    def create(self, request: dict[str, Any]) -> bool:
        """Create the stream as ``request`` (CreateStream's parameters, see
        :func:`create_stream_request`) says; False if it already exists.

        A failure that can pass (a 5xx, a throttle, a reset connection) is retried with backoff,
        as every other call is. If an attempt whose answer was lost did create the stream, the
        next one finds it in use: that counts as created, since this run asked for it.

        Raises:
            FatalSinkError: The stream cannot be created.
        """
        what = _stream_kind(request)
        lost_answer = False
        for attempt in range(OPEN_ATTEMPTS):
            try:
                self._client.create_stream(**request)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code, message = error.get("Code"), str(error.get("Message", ""))
                if code == "ResourceInUseException":
                    return lost_answer
                if code == "LimitExceededException" and "rate exceeded" not in message.lower():
                    raise FatalSinkError(
                        f"cannot create stream {self._stream!r} with {what}: "
                        f"{message or 'shard limit reached'} (ask for fewer --shards "
                        "or a higher shard quota)"
                    ) from exc
                on_demand = _stream_mode(request) != "PROVISIONED"
                if on_demand and code in ("ValidationException", "InvalidArgumentException"):
                    raise FatalSinkError(
                        f"cannot create stream {self._stream!r} with {what}: {message} (an "
                        "endpoint without on-demand streams? try --capacity provisioned)"
                    ) from exc
                self._retry_or_raise(exc, attempt)
            except BotoCoreError as exc:
                lost_answer = True  # the request may have reached the server
                self._retry_or_raise(exc, attempt)
            else:
                self.say(f"creating stream {self._stream!r} with {what}")
                return True
        raise AssertionError("unreachable")

    def _retry_or_raise(self, exc: Exception, attempt: int) -> None:
        error = translate_error(exc, stream=self._stream, endpoint=self._endpoint)
        if isinstance(error, FatalSinkError) or attempt == OPEN_ATTEMPTS - 1:
            raise FatalSinkError(str(error)) from exc
        self.say(f"{error}; trying again")
        self._sleep(min(2.0, 0.2 * 2**attempt) * (0.5 + random.random() / 2))

    def wait_until_active(self) -> dict[str, Any]:
        """Return the stream's summary once it takes writes (ACTIVE or UPDATING).

        Raises:
            FatalSinkError: The stream is being deleted, or stayed CREATING past the timeout.
        """
        started = self._monotonic()
        next_note = 0.0
        delay = 0.05
        while True:
            summary = self.call("describe_stream_summary", StreamName=self._stream)
            status = summary["StreamDescriptionSummary"]["StreamStatus"]
            if status in ("ACTIVE", "UPDATING"):
                if next_note:
                    self.say(f"stream {self._stream!r} is ACTIVE")
                found: dict[str, Any] = summary["StreamDescriptionSummary"]
                return found
            if status == "DELETING":
                raise FatalSinkError(
                    f"stream {self._stream!r} is being deleted: wait until it is gone, then "
                    "create it again (--create-stream)"
                )
            waited = self._monotonic() - started
            if waited > self._timeout:
                raise FatalSinkError(
                    f"stream {self._stream!r} is still {status} after {self._timeout:.0f} s: "
                    "try again once `aws kinesis describe-stream-summary` says ACTIVE"
                )
            if waited >= next_note:
                self.say(
                    f"stream {self._stream!r} is {status}; waiting until it is ACTIVE "
                    f"({waited:.0f} s of at most {self._timeout:.0f} s)"
                )
                next_note = max(waited, 0.001) + 10.0
            self._sleep(delay)
            delay = min(delay * 2, 2.0)

    def shards(self, *, open_only: bool = True) -> list[Shard]:
        """The stream's shards (see :func:`list_shards`)."""
        return list_shards(self._client, self._stream, open_only=open_only, sleep=self._sleep)

    def say(self, line: str) -> None:
        """Report progress on one line (stderr by default)."""
        print(line, file=self._progress or sys.stderr, flush=True)


class KinesisSink:
    """PutRecords into a real stream; safe to call from several threads at once.

    PutRecords goes out through ``wire`` when given (:class:`PutRecordsWire`, as :meth:`open`
    makes it: the same request, without botocore's serializer and parser), else through the
    client.

    Args:
        client: A Kinesis client (closed by :meth:`close`).
        name: The stream's name.
        shards: Its open shards.
        wire: The PutRecords sender (closed by :meth:`close`).
        distribution: AUTO for a stream checked to spread records itself (records may then
            go without a key).
    """

    def __init__(
        self,
        client: Any,
        name: str,
        shards: Sequence[Shard],
        *,
        wire: PutRecordsWire | None = None,
        distribution: RecordDistribution = RecordDistribution.USER_PARTITION_KEY,
    ) -> None:
        self._client = client
        self._wire = wire
        self.distribution = distribution
        self.name = name
        self.shards = tuple(shards)
        self._known: set[str | None] = {None, *[s.shard_id for s in self.shards]}
        self._resharded = False
        self.endpoint: str = client.meta.endpoint_url

    @classmethod
    def open(
        cls,
        options: SinkOptions,
        *,
        progress: TextIO | None = None,
        active_timeout: float = DEFAULT_ACTIVE_TIMEOUT,
    ) -> KinesisSink:
        """Connect to ``options.stream``, creating it first if asked, and wait until ACTIVE.

        Raises:
            FatalSinkError: The stream cannot be written (one line saying what to do).
        """
        if options.stream is None:
            raise ValueError("a Kinesis sink needs a stream name")
        connections = max(10, options.max_in_flight + 2)
        client, credentials = _client_and_credentials(
            options.region, options.profile, options.endpoint_url, connections
        )
        try:
            opener = StreamOpener(
                client,
                options.stream,
                endpoint=client.meta.endpoint_url,
                progress=progress,
                timeout=active_timeout,
            )
            request = create_stream_request(options.stream, options)
            created = opener.create(request) if options.create_stream else False
            summary = opener.wait_until_active()
            shards = opener.shards()
            problem = stream_mismatch(options.stream, summary, options)
            if problem is not None:
                raise FatalSinkError(problem)
            mode = _stream_mode(summary)
            if options.create_stream and not created and mode != _stream_mode(request):
                opener.say(
                    f"stream {options.stream!r} already exists as {mode}: writing to it "
                    f"(--capacity {options.capacity.value} applies to a new stream)"
                )
            elif options.create_stream and not created and len(shards) != options.shards:
                if mode == "PROVISIONED":
                    opener.say(
                        f"stream {options.stream!r} already exists with "
                        f"{counted(len(shards), 'open shard')}: "
                        f"writing to those (--shards {options.shards} applies to a new stream)"
                    )
        except BaseException:
            client.close()
            raise
        if not shards:
            client.close()
            raise FatalSinkError(f"stream {options.stream!r} has no open shards")
        wire = PutRecordsWire(
            client,
            credentials,
            options.stream,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_connections=connections,
        )
        return cls(client, options.stream, shards, wire=wire, distribution=options.distribution)

    def describe(self) -> StreamDescription:
        """The stream's name and open shards, as ListShards gave them.

        Listed again once an answer has named a shard not among them: the stream was
        resharded (as an on-demand stream is when it scales), and the run asks for the new map.
        """
        if self._resharded:
            self._resharded = False
            self.shards = tuple(list_shards(self._client, self.name))
            self._known = {None, *[s.shard_id for s in self.shards]}
        return StreamDescription(name=self.name, shards=self.shards, distribution=self.distribution)

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome:
        """Send one PutRecords request; per-entry failures come back in the outcome.

        Raises:
            RetryableSinkError: The whole request failed but may pass later.
            FatalSinkError: Writing cannot go on.
        """
        try:
            if self._wire is not None:
                outcome = self._wire.put_records(records)
            else:
                answer = self._client.put_records(StreamName=self.name, Records=_entries(records))
                outcome = outcome_from_answer(answer, len(records))
        except (BotoCoreError, ClientError) as exc:
            raise translate_error(exc, stream=self.name, endpoint=self.endpoint) from exc
        except MismatchedAnswer as exc:
            raise FatalSinkError(
                f"{self.endpoint} answered {len(records)} records with {exc.results} results: "
                "not a Kinesis-compatible endpoint?"
            ) from None
        if not self._known.issuperset(outcome.shard_ids):
            self._resharded = True
        return outcome

    def close(self) -> None:
        """Close the client's connections."""
        if self._wire is not None:
            self._wire.close()
        self._client.close()


def create_stream_request(name: str, options: SinkOptions) -> dict[str, Any]:
    """CreateStream's parameters for what the options ask.

    A provisioned stream gets its shard count (and nothing a server without capacity modes
    would refuse); an on-demand one its mode, AUTO distribution for records without a key,
    and Advantage's warm throughput. The maximum record size is asked for only when set.
    """
    request: dict[str, Any] = {"StreamName": name}
    if options.capacity is CapacityMode.PROVISIONED:
        request["ShardCount"] = options.shards
    else:
        request["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
        if options.distribution is RecordDistribution.AUTO:
            request["RecordDistributionStrategy"] = RecordDistribution.AUTO.value
        warm = options.policy.warm_throughput_mibps
        if options.capacity is CapacityMode.ON_DEMAND_ADVANTAGE and warm:
            request["WarmThroughputMiBps"] = math.ceil(warm)
    if options.max_record_size_kib is not None:
        request["MaxRecordSizeInKiB"] = options.max_record_size_kib
    return request


#: A stream's maximum record size when DescribeStreamSummary does not say (1 MiB).
DEFAULT_MAX_RECORD_KIB = 1024


def stream_mismatch(name: str, summary: dict[str, Any], options: SinkOptions) -> str | None:
    """One line on why the stream cannot take this run's records as asked; None if it can.

    Args:
        name: The stream's name.
        summary: Its ``StreamDescriptionSummary``.
        options: What the run sends (records without a key, how large).
    """
    if options.distribution is RecordDistribution.AUTO:
        if _stream_mode(summary) != "ON_DEMAND":
            return (
                f"stream {name!r} is provisioned: --partition-key auto needs an on-demand "
                "stream that spreads records itself (AWS refuses that on provisioned streams); "
                "create one under a new --stream name with --create-stream --capacity on-demand"
            )
        strategy = summary.get("RecordDistributionStrategy", "USER_PARTITION_KEY")
        if strategy != RecordDistribution.AUTO.value:
            return (
                f"stream {name!r} places records by partition key ({strategy}), so records "
                "without one would be refused: switch it with `aws kinesis "
                "update-stream-record-distribution-strategy --record-distribution-strategy "
                "AUTO --stream-arn ARN`, or choose another --partition-key"
            )
    largest_kib = int(summary.get("MaxRecordSizeInKiB") or DEFAULT_MAX_RECORD_KIB)
    needed_kib = math.ceil(options.max_record_bytes / 1024)
    if needed_kib > largest_kib:
        return (
            f"stream {name!r} takes records of at most {largest_kib:,} KiB, but this run may "
            f"send records of {needed_kib:,} KiB (--max-record-bytes {options.max_record_bytes}): "
            "lower --max-record-bytes, or raise the stream's limit (`aws kinesis "
            "update-max-record-size`)"
        )
    return None


def _stream_mode(summary: dict[str, Any]) -> str:
    """``PROVISIONED`` or ``ON_DEMAND``, from a summary or a CreateStream request (a server
    without capacity modes says nothing: provisioned)."""
    return str((summary.get("StreamModeDetails") or {}).get("StreamMode", "PROVISIONED"))


def _stream_kind(request: dict[str, Any]) -> str:
    """What a CreateStream request makes, for messages: "4 shards", "on-demand, AUTO"."""
    if _stream_mode(request) == "PROVISIONED":
        return counted(int(request.get("ShardCount", 1)), "shard")
    parts = ["on-demand capacity"]
    if "RecordDistributionStrategy" in request:
        parts.append("record distribution AUTO")
    if "WarmThroughputMiBps" in request:
        parts.append(f"warm throughput {request['WarmThroughputMiBps']} MiB/s")
    if "MaxRecordSizeInKiB" in request:
        parts.append(f"records up to {request['MaxRecordSizeInKiB']:,} KiB")
    return ", ".join(parts)


def _entries(records: Sequence[Record]) -> list[dict[str, Any]]:
    """PutRecords entries as boto3 takes them; a record without a key is sent without one."""
    entries: list[dict[str, Any]] = []
    for r in records:
        entry: dict[str, Any] = {"Data": r.data}
        if r.partition_key:
            entry["PartitionKey"] = r.partition_key
        if r.explicit_hash_key is not None:
            entry["ExplicitHashKey"] = r.explicit_hash_key
        entries.append(entry)
    return entries
