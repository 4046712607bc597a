"""What to publish when: the spool, the in-flight window and the counters; no I/O of its own.

The :class:`Publisher` is driven by the agent's loop: a new message (:meth:`Publisher.submit`),
the connection coming and going, and publishes completing. It answers by calling
``link.publish``. It never waits.

QoS 1: every message goes to the spool first and is sent from there, oldest first, at most
``window`` at a time, so the SDK's memory queue stays small however long the bike was offline.
A PUBACK removes it from the spool. A lost connection puts everything in flight back in line:
after reconnecting, the spool is sent again from its oldest message (downstream deduplicates by
uuid). QoS 0: a message is sent if connected, and counted as dropped otherwise.

A QoS 1 publish that fails on a live connection (the client refused it, or it timed out) is
sent again, but never at once: a failure pauses all QoS 1 sends for a backoff that doubles with
each pause, from :data:`RETRY_BACKOFF_MIN` to :data:`RETRY_BACKOFF_MAX` seconds (failures within
one pause share it), and a PUBACK resets it. A failure no retry cures costs a few attempts per
backoff, never a busy loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from alleycat_rider.agent.spool import Spool
from alleycat_rider.mqtt import PublishDone

#: How many messages may wait for their PUBACK at once.
DEFAULT_WINDOW = 10
#: Seconds QoS 1 sends pause after the first failed publish; the pause doubles with each failure.
RETRY_BACKOFF_MIN = 1.0
#: The longest pause after failed publishes.
RETRY_BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class _Held:
    """A message prepared but not yet released."""

    seq: int
    """Its spool sequence number (0 for QoS 0)."""
    payload: bytes
    after: int
    """The spool's newest sequence number before it was appended."""


class Link(Protocol):
    """The part of :class:`~alleycat_rider.mqtt.MqttLink` the publisher uses."""

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        """Start publishing; a :class:`PublishDone` with ``token`` is fed back later."""


@dataclass(slots=True)
class PublishCounters:
    """What happened to the messages of this run."""

    produced: int = 0
    """Messages made (one a second, plus the final one)."""
    sent: int = 0
    """Publishes handed to the MQTT client, resends included."""
    acked: int = 0
    """Messages the broker acknowledged (QoS 1) or that were written (QoS 0)."""
    retried: int = 0
    """Resends of QoS 1 messages after a failure or a lost connection."""
    failed: int = 0
    """QoS 1 publishes that failed on a live connection (each is retried after a backoff)."""
    dropped: int = 0
    """QoS 0 messages made while offline or failed; QoS 1 messages pushed out of a full spool."""
    rejected: int = 0
    """QoS 1 messages the broker answered with an error reason; removed from the spool."""


class Publisher:
    """Sends messages through a link, through the spool for QoS 1.

    Args:
        link: Where publishes go.
        topic: The topic of every message.
        qos: 0 or 1.
        spool: The spool; required for QoS 1, unused for QoS 0.
        window: The most publishes in flight at once.
        monotonic: The clock that times the backoff after failed publishes.
    """

    def __init__(
        self,
        link: Link,
        *,
        topic: str,
        qos: int,
        spool: Spool | None,
        window: int = DEFAULT_WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if qos == 1 and spool is None:
            raise ValueError("QoS 1 needs a spool")
        self.counters = PublishCounters()
        self.connected = False
        self._link = link
        self._topic = topic
        self._qos = qos
        self._spool = spool
        self._window = window
        self._monotonic = monotonic
        self._backoff = 0.0
        """The pause the next failure starts (0 until a publish fails)."""
        self._paused_until = float("-inf")
        self._in_flight: set[int] = set()
        self._retry: set[int] = set()
        self._cursor = 0
        """The highest spool sequence number sent on this connection."""
        self._highest_sent = 0
        """The highest spool sequence number sent by this process: sending one below is a retry."""
        self._next_qos0_token = 0
        self._held: _Held | None = None
        """The prepared message, not yet released."""

    @property
    def in_flight(self) -> int:
        """Publishes waiting for completion."""
        return len(self._in_flight)

    @property
    def resume_in(self) -> float:
        """Seconds until QoS 1 sends resume after failed publishes (0 when not paused)."""
        return max(0.0, self._paused_until - self._monotonic())

    @property
    def spool_depth(self) -> int:
        """Messages in the spool (QoS 1), 0 for QoS 0."""
        return 0 if self._spool is None else self._spool.depth

    @property
    def backlog(self) -> bool:
        """Whether spooled messages wait for room in the window (a prepared one aside)."""
        if self._spool is None or not self.connected:
            return False
        newest = self._held.after if self._held is not None else self._spool.last_seq
        return bool(self._retry) or self._cursor < newest

    @property
    def durable_needed(self) -> bool:
        """Whether a new QoS 1 message may have to wait, and so must be on disk (fsync) first.

        A message sent at once on a healthy link is acknowledged within milliseconds; it is
        spooled without waiting for the disk. Offline, or behind unacknowledged messages, it is
        spooled durably, which also makes every earlier append durable.
        """
        if self._spool is None:
            return False
        return not self.connected or self.backlog or bool(self._in_flight)

    @property
    def settled(self) -> bool:
        """Nothing left to wait for: nothing in flight and, if connected, nothing spooled."""
        return not self._in_flight and (not self.connected or self.spool_depth == 0)

    def submit(self, uuid: str, payload: bytes) -> None:
        """Publish a new message now (spooled first for QoS 1): :meth:`prepare`, :meth:`release`.

        Raises:
            SpoolError: the spool cannot be written.
            PublishError: the client cannot take the publish.
        """
        self.prepare(uuid, payload)
        self.release()

    def prepare(self, uuid: str, payload: bytes) -> None:
        """Make a new message ready to send, without sending it: spool it for QoS 1.

        The slow part (an fsync) happens here, ahead of the deadline; :meth:`release` then sends
        at the deadline. Until released, the message is held back, even on reconnecting.

        Raises:
            SpoolError: the spool cannot be written.
        """
        self.release()
        self.counters.produced += 1
        if self._spool is None:
            self._held = _Held(0, payload, 0)
            return
        before = self._spool.last_seq
        seq, overflow = self._spool.append(uuid, payload, durable=self.durable_needed)
        self.counters.dropped += overflow
        self._held = _Held(seq, payload, before)

    def release(self) -> None:
        """Send the prepared message (and whatever else the spool lets through).

        Raises:
            PublishError: the client cannot take the publish.
        """
        held, self._held = self._held, None
        if held is None:
            return
        room = self.connected and len(self._in_flight) < self._window
        if self._spool is None:
            if room:
                self._next_qos0_token -= 1
                self._send(self._next_qos0_token, held.payload, qos=0)
            else:
                self.counters.dropped += 1
        elif room and not self._retry and self._cursor >= held.after and not self.resume_in:
            # Everything older is sent already: send it from memory, no need to read it back.
            self._send(held.seq, held.payload, qos=1)
            self._cursor = held.seq
        else:
            self.pump()

    def on_connected(self) -> None:
        """The link is up: send what the spool holds, oldest first."""
        self.connected = True
        self._cursor = 0
        self._retry.clear()
        self.pump()

    def on_disconnected(self) -> None:
        """The link is down: whatever was in flight is sent again after reconnecting."""
        self.connected = False
        self._in_flight.clear()
        self._retry.clear()
        self._cursor = 0

    def on_publish_done(self, done: PublishDone) -> None:
        """A publish completed: acknowledge, drop or line it up again, then send more."""
        token = done.token
        current = token in self._in_flight
        self._in_flight.discard(token)
        if token < 0:  # QoS 0
            if done.delivered:
                self.counters.acked += 1
            else:
                self.counters.dropped += 1
            return
        assert self._spool is not None
        if done.delivered or done.rejected:
            # A late PUBACK from an earlier connection still means the broker has the message.
            if self._spool.ack(token):
                if done.delivered:
                    self.counters.acked += 1
                else:
                    self.counters.rejected += 1
            self._retry.discard(token)
            if done.delivered:
                self._backoff = 0.0
        elif current and self.connected:
            self._retry.add(token)
            self.counters.failed += 1
            # Whatever the reason, never straight again: a refusal no retry cures would spin.
            # Failures within one pause (the rest of the window) share it.
            now = self._monotonic()
            if now >= self._paused_until:
                self._backoff = min(max(2 * self._backoff, RETRY_BACKOFF_MIN), RETRY_BACKOFF_MAX)
                self._paused_until = now + self._backoff
        self.pump()

    def pump(self) -> None:
        """Send spooled messages while connected, not paused, and the window has room."""
        if self._spool is None or not self.connected:
            return
        if not self._retry and self._cursor >= self._spool.last_seq:
            return  # nothing unsent
        if self.resume_in:
            return
        room = self._window - len(self._in_flight)
        if room > 0 and self._retry:
            wanted = sorted(self._retry)[:room]
            self._retry.difference_update(wanted)
            for message in self._spool.get(wanted):  # those still spooled
                self._send(message.seq, message.payload, qos=1)
            room = self._window - len(self._in_flight)
        if room > 0:
            for message in self._spool.pending(after=self._cursor, limit=room):
                if self._held is not None and message.seq >= self._held.seq:
                    break
                self._send(message.seq, message.payload, qos=1)
                self._cursor = message.seq

    def _send(self, token: int, payload: bytes, *, qos: int) -> None:
        self._in_flight.add(token)
        self.counters.sent += 1
        if qos == 1:
            if token <= self._highest_sent:
                self.counters.retried += 1
            self._highest_sent = max(self._highest_sent, token)
        self._link.publish(self._topic, payload, qos, token)
