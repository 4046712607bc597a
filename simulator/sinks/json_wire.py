"""PutRecords on the wire: botocore signs and sends it, the json module writes and reads it.

For a 500-record PutRecords request, botocore spends about 70% of the client's CPU walking its
service model: 40% serializing the entries shape by shape, 30% parsing the 500 results back
(measured with cProfile on a bare loop). The request is plain JSON (the Kinesis
``x-amz-json-1.1`` protocol), so :class:`PutRecordsWire` writes it as bytes (each entry's data in
base64, keys as JSON strings) and reads the answer with :func:`json.loads`, and leaves the rest
to botocore: credentials and their refresh (:class:`botocore.credentials.Credentials`),
Signature Version 4
(:class:`botocore.auth.SigV4Auth`), connection pooling, TLS, proxies and timeouts
(:class:`botocore.httpsession.URLLib3Session`). Its failures are botocore's own exceptions (a
:class:`~botocore.exceptions.ClientError` built from the error body, as botocore's parser builds
it), so :func:`~simulator.sinks.kinesis_errors.translate_error` treats them as before.

Every other call (describe, list shards, create, read) stays on the boto3 client.
"""

from __future__ import annotations

import binascii
import json
import os
import re
from collections.abc import Sequence
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.httpsession import URLLib3Session
from botocore.utils import get_environ_proxies

from simulator.engine.batching import Record
from simulator.engine.sink import PutRecordsOutcome

TARGET = "Kinesis_20131202.PutRecords"
CONTENT_TYPE = "application/x-amz-json-1.1"


class PutRecordsWire:
    """Sends PutRecords requests for one stream to the endpoint of a boto3 Kinesis client.

    Args:
        client: The boto3 client whose endpoint and region to use (``client.meta``).
        credentials: The session's credentials (None: every request fails as unsigned).
        stream: The stream's name.
        connect_timeout: Seconds to connect.
        read_timeout: Seconds to wait for an answer.
        max_connections: Connections kept open (one per request in flight).
    """

    def __init__(
        self,
        client: Any,
        credentials: Any,
        stream: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
    ) -> None:
        self._url = client.meta.endpoint_url.rstrip("/") + "/"
        self._region = client.meta.region_name
        self._credentials = credentials
        self._stream = stream
        self._head = b'{"StreamName":' + _text(stream) + b',"Records":['
        self._http = URLLib3Session(
            verify=os.environ.get("AWS_CA_BUNDLE") or True,
            proxies=get_environ_proxies(self._url),
            timeout=(connect_timeout, read_timeout),
            max_pool_connections=max_connections,
        )

    def put_records(self, records: Sequence[Record]) -> PutRecordsOutcome:
        """One PutRecords request and what became of each entry.

        Raises:
            botocore.exceptions.BotoCoreError: Not sent, or no answer (a connection, a timeout).
            botocore.exceptions.ClientError: The service answered with an error.
            MismatchedAnswer: The answer does not have one result per entry.
        """
        body = b"".join([self._head, b",".join([_entry(r) for r in records]), b"]}"])
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET},
        )
        if self._credentials is None:
            raise NoCredentialsError()
        SigV4Auth(self._credentials.get_frozen_credentials(), "kinesis", self._region).add_auth(
            request
        )
        response = self._http.send(request.prepare())
        if response.status_code == 200:
            return outcome_from_body(response.content, len(records))
        raise error_from_answer(response.status_code, response.content, response.headers)

    def close(self) -> None:
        self._http.close()


class MismatchedAnswer(Exception):
    """A PutRecords answer without one result per entry sent: not a Kinesis endpoint?"""

    def __init__(self, results: int) -> None:
        super().__init__(f"{results} results")
        self.results = results


_FAILED = re.compile(rb'"FailedRecordCount"\s*:\s*(\d+)')
_SHARD_ID = re.compile(rb'"ShardId"\s*:\s*"([^"\\]*)"')
_SEQUENCE_NUMBER = re.compile(rb'"SequenceNumber"\s*:\s*"([^"\\]*)"')


def outcome_from_body(content: bytes, sent: int) -> PutRecordsOutcome:
    """The outcome in a PutRecords answer's body.

    When every entry was accepted (the common case) the shard ids and sequence numbers are
    picked out of the body directly, one of each per entry, without building a dict per result
    (a 500-entry answer is 1,000 objects for the garbage collector); anything else is parsed.
    """
    failed = _FAILED.search(content)
    if failed is not None and failed.group(1) == b"0":
        shard_ids = _SHARD_ID.findall(content)
        sequences = _SEQUENCE_NUMBER.findall(content)
        if len(shard_ids) == len(sequences) == sent:
            return PutRecordsOutcome(
                failed_record_count=0,
                shard_ids=[shard.decode() for shard in shard_ids],
                sequence_numbers=[number.decode() for number in sequences],
                error_codes=[None] * sent,
            )
    return outcome_from_answer(json.loads(content), sent)


def outcome_from_answer(answer: dict[str, Any], sent: int) -> PutRecordsOutcome:
    """The outcome in a parsed PutRecords answer (botocore's or the json module's)."""
    results = answer.get("Records") or []
    if len(results) != sent:
        raise MismatchedAnswer(len(results))
    if not int(answer.get("FailedRecordCount", 0) or 0):
        return PutRecordsOutcome(
            failed_record_count=0,
            shard_ids=[r["ShardId"] for r in results],
            sequence_numbers=[r["SequenceNumber"] for r in results],
            error_codes=[None] * sent,
        )
    return PutRecordsOutcome(
        failed_record_count=sum(1 for r in results if "ErrorCode" in r),
        shard_ids=[r.get("ShardId") if "ErrorCode" not in r else None for r in results],
        sequence_numbers=[
            r.get("SequenceNumber") if "ErrorCode" not in r else None for r in results
        ],
        error_codes=[r.get("ErrorCode") for r in results],
    )


def _entry(record: Record) -> bytes:
    """One entry of the request body: ``{"Data":"<base64>","PartitionKey":"..."}``.

    A record without a key (``--partition-key auto``) is sent without ``PartitionKey``: a
    stream with service-managed distribution takes it so.
    """
    entry = b'{"Data":"' + binascii.b2a_base64(record.data, newline=False) + b'"'
    if record.partition_key:
        entry += b',"PartitionKey":' + _text(record.partition_key)
    if record.explicit_hash_key is not None:
        entry += b',"ExplicitHashKey":' + _text(record.explicit_hash_key)
    return entry + b"}"


def _text(text: str) -> bytes:
    """``text`` as a JSON string; letters and digits need no escaping (most keys)."""
    if text.isascii() and text.isalnum():
        return b'"' + text.encode() + b'"'
    return json.dumps(text).encode()


def error_from_answer(status: int, content: bytes, headers: Any) -> ClientError:
    """The ClientError botocore's JSON parser would raise for this answer."""
    try:
        error = json.loads(content)
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("__type") or headers.get("x-amzn-ErrorType") or f"HTTP{status}")
    code = code.rsplit("#", 1)[-1].split(":", 1)[0]  # "com.amazon...#Code" or "Code:http://..."
    message = str(
        error.get("message") or error.get("Message") or content[:200].decode("utf-8", "replace")
    )
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutRecords",
    )
