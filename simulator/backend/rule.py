"""The IoT rule ``alleycatIngest``: every message on the rule's topic becomes one Kinesis record.

As IoT Core's Kinesis action does, each message is its own record under its own partition key
(a :class:`~simulator.backend.template.KeyTemplate`, ``${timestamp()}`` by default, evaluated
when the rule takes the message). Several records may share one PutRecords request.

At least once: a message's ``ack`` (its PUBACK to the broker) is called only once the stream has
accepted its record or the error action has it. Entries the stream refuses (throttled, internal
failures, a whole request failing) are retried with backoff for ``retry_for`` seconds, then go to
the **error action**: a JSON-lines file in IoT Core's error-action format. This is where the
stand-in differs from IoT Core, which retries nothing into the stream: a local stream that
refuses a record for a moment should not cost a test its message. ``retry_for=0`` behaves as
IoT Core does.

Everything taken in is counted, once, as written, sent to the error action, or still pending
(not acknowledged, so the broker delivers it again to the rule's persistent session)::

    received = written + error_action + pending
"""

from __future__ import annotations

import base64
import json
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from simulator.backend.template import DEFAULT_KEY_TEMPLATE, KeyTemplate, MessageContext
from simulator.engine.batching import Record
from simulator.engine.sink import PutRecordsOutcome
from simulator.errors import FatalSinkError, RetryableSinkError

#: The original rule's name and topic.
DEFAULT_RULE_NAME = "alleycatIngest"
DEFAULT_RULE_TOPIC = "alleycat-publish"
#: Seconds a refused record is retried before it goes to the error action.
DEFAULT_RETRY_FOR = 10.0
#: PutRecords limits: entries per request, bytes per request, bytes per record (data and key).
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
#: How long the rule waits for more messages before sending a request that is not full.
LINGER_SECONDS = 0.02
#: Backoff between retries of a refused record.
MIN_BACKOFF = 0.1
MAX_BACKOFF = 2.0


class Writer(Protocol):
    """What the rule writes to: a sink's ``put_records``."""

    def put_records(self, records: Sequence[Record], now: float) -> PutRecordsOutcome: ...


@dataclass(slots=True)
class RuleCounts:
    """What the rule did; ``received = written + error_action + pending`` at every moment."""

    received: int = 0
    written: int = 0
    retried: int = 0
    """Entries sent again after the stream refused them (one message may count several times)."""
    error_action: int = 0
    requests: int = 0
    failed_requests: int = 0
    """PutRecords requests that failed as a whole."""

    @property
    def pending(self) -> int:
        """Taken in, neither written nor in the error action yet: not acknowledged."""
        return self.received - self.written - self.error_action

    def to_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "written": self.written,
            "retried": self.retried,
            "error_action": self.error_action,
            "pending": self.pending,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
        }


@dataclass(slots=True)
class Pending:
    """One message on its way into the stream."""

    record: Record
    topic: str
    client_id: str
    payload: bytes
    ack: Callable[[], None] | None
    taken_at: float
    """Monotonic seconds when the rule took the message."""
    due_at: float = 0.0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class ErrorAction:
    """IoT Core's error action, as a JSON-lines file: one line per message the stream refused.

    Each line has ``ruleName``, ``topic``, ``cloudwatchTraceId``, ``clientId``,
    ``base64OriginalPayload`` and ``failures`` (``failedAction``, ``failedResource``,
    ``errorMessage``). Lines are flushed and synced before the messages are acknowledged.
    """

    def __init__(self, path: Path | None, *, rule_name: str, stream: str) -> None:
        self.path = path
        self._rule_name = rule_name
        self._stream = stream
        self._file: IO[str] | None = None

    def write(self, messages: Sequence[Pending]) -> None:
        """Record ``messages`` durably (or nowhere, without a file: IoT Core loses them then)."""
        if self.path is None or not messages:
            return
        if self._file is None:  # opened at the first refusal: no file while all goes well
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        for message in messages:
            line = {
                "ruleName": self._rule_name,
                "topic": message.topic,
                "cloudwatchTraceId": str(uuid.uuid4()),
                "clientId": message.client_id,
                "base64OriginalPayload": base64.b64encode(message.payload).decode(),
                "failures": [
                    {
                        "failedAction": "KinesisAction",
                        "failedResource": self._stream,
                        "errorMessage": message.errors[-1] if message.errors else "unknown",
                    }
                ],
            }
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def client_id_from_topic(rule_topic: str) -> Callable[[str], str]:
    """The sender's client id, where the topic tells it: ``<rule topic>/<client id>``.

    mosquitto does not tell a subscriber who published a message (IoT Core's rules engine knows);
    ``alleycat stack``'s broker lets each device publish on ``<rule topic>/<its certificate's
    name>`` only, so the level after the rule's topic is who sent it. On the shared topic itself
    the sender is unknown here: an empty string.
    """
    prefix = rule_topic.rstrip("/") + "/"

    def client_id(topic: str) -> str:
        if topic.startswith(prefix) and "/" not in topic[len(prefix) :]:
            return topic[len(prefix) :]
        return ""

    return client_id


class IotRule:
    """Carries messages from the broker into a stream; see the module doc.

    Args:
        writer: Where records go (a :class:`~simulator.sinks.kinesis.KinesisSink`).
        stream: The stream's name, for the error action.
        key: The partition-key template.
        error_action: Where refused messages go.
        rule_topic: The rule's topic (``alleycat-publish``).
        stamp_client_id: Add the sender's client id to each record as ``clientId``.
        retry_for: Seconds a refused record is retried before the error action takes it.
        monotonic: The clock retries are timed on.
        wall_ms: Epoch milliseconds, for ``${timestamp()}``.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        stream: str,
        key: KeyTemplate | None = None,
        error_action: ErrorAction | None = None,
        rule_topic: str = DEFAULT_RULE_TOPIC,
        stamp_client_id: bool = False,
        retry_for: float = DEFAULT_RETRY_FOR,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._writer = writer
        self._key = key or KeyTemplate.parse(DEFAULT_KEY_TEMPLATE)
        self._error_action = error_action or ErrorAction(
            None, rule_name=DEFAULT_RULE_NAME, stream=stream
        )
        self._client_id = client_id_from_topic(rule_topic)
        self._stamp = stamp_client_id
        self._retry_for = retry_for
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._inbox: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._retries: list[Pending] = []
        self.counts = RuleCounts()
        self.fatal: str | None = None
        """Set when writing cannot go on (a message every refused record also carries)."""

    def offer(self, topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        """Take one message from the broker. Never blocks: safe in an SDK callback."""
        now_ms = self._wall_ms()
        client_id = self._client_id(topic)
        fields: dict[str, Any] = {}
        data = payload
        try:
            decoded = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            decoded = None
        if isinstance(decoded, dict):
            fields = decoded
            if self._stamp:
                stamped = {**decoded, "clientId": client_id}
                data = json.dumps(stamped, separators=(",", ":")).encode()
        key = self._key.key(MessageContext(topic, client_id, now_ms, fields))
        record = Record(data, key, None, now_ms / 1000)
        taken = self._monotonic()
        self.counts.received += 1
        self._inbox.put(Pending(record, topic, client_id, payload, ack, taken, taken))

    def run(self, stop: threading.Event) -> None:
        """Write what arrives until ``stop`` is set, then what can be written within a second."""
        while not stop.is_set():
            self.step(timeout=0.1)
        self.drain(1.0)

    def drain(self, timeout: float) -> None:
        """Keep writing until nothing is pending or ``timeout`` seconds have passed."""
        deadline = self._monotonic() + timeout
        while self.counts.pending and self._monotonic() < deadline:
            self.step(timeout=0.05)

    def step(self, timeout: float) -> None:
        """Send one request of what is due, waiting up to ``timeout`` for something to send."""
        batch = self._next_batch(timeout)
        if batch:
            self._send(batch)

    def _next_batch(self, timeout: float) -> list[Pending]:
        now = self._monotonic()
        batch = [p for p in self._retries if p.due_at <= now][:MAX_BATCH_RECORDS]
        if batch:
            taken = {id(p) for p in batch}
            self._retries = [p for p in self._retries if id(p) not in taken]
        size = sum(p.record.size for p in batch)
        wait = timeout if not batch and not self._retries else min(timeout, LINGER_SECONDS)
        deadline = now + wait
        while len(batch) < MAX_BATCH_RECORDS:
            remaining = deadline - self._monotonic()
            try:
                item = (
                    self._inbox.get(timeout=remaining)
                    if remaining > 0
                    else self._inbox.get_nowait()
                )
            except queue.Empty:
                break
            if item.record.size > MAX_RECORD_BYTES:
                item.errors.append(
                    f"the record is {item.record.size:,} bytes; Kinesis takes at most "
                    f"{MAX_RECORD_BYTES:,}"
                )
                self._give_up([item])
                continue
            if size + item.record.size > MAX_BATCH_BYTES:
                self._retries.append(item)  # due now: first in the next request
                break
            batch.append(item)
            size += item.record.size
            if len(batch) == 1:
                deadline = min(deadline, self._monotonic() + LINGER_SECONDS)
        return batch

    def _send(self, batch: list[Pending]) -> None:
        self.counts.requests += 1
        self.counts.retried += sum(1 for p in batch if p.attempts)
        for pending in batch:
            pending.attempts += 1
        try:
            outcome = self._writer.put_records([p.record for p in batch], time.time())
        except RetryableSinkError as exc:
            self.counts.failed_requests += 1
            self._refused(batch, str(exc))
            return
        except FatalSinkError as exc:
            self.counts.failed_requests += 1
            self.fatal = str(exc)
            for pending in batch:
                pending.errors.append(str(exc))
            self._give_up(batch)
            return
        written = []
        refused = []
        for pending, code in zip(batch, outcome.error_codes, strict=True):
            if code is None:
                written.append(pending)
            else:
                pending.errors.append(code)
                refused.append(pending)
        self.counts.written += len(written)
        _acknowledge(written)
        if refused:
            self._refused(refused, None)

    def _refused(self, batch: list[Pending], error: str | None) -> None:
        now = self._monotonic()
        expired = []
        for pending in batch:
            if error is not None:
                pending.errors.append(error)
            backoff = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (pending.attempts - 1))
            backoff *= 0.5 + random.random() / 2
            if now + backoff - pending.taken_at > self._retry_for:
                expired.append(pending)
            else:
                pending.due_at = now + backoff
                self._retries.append(pending)
        self._give_up(expired)

    def _give_up(self, messages: list[Pending]) -> None:
        if not messages:
            return
        self._error_action.write(messages)
        self.counts.error_action += len(messages)
        _acknowledge(messages)

    def close(self) -> None:
        self._error_action.close()


def _acknowledge(messages: Sequence[Pending]) -> None:
    for message in messages:
        if message.ack is not None:
            message.ack()
