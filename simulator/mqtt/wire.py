"""The fleet's connection layer: thousands of MQTT 5 connections on one asyncio event loop.

Each rider's connection is one small :class:`Link` (no task, future or thread per rider or per
message) on a non-blocking socket that the loop watches (``add_reader``, and ``add_writer`` only
while the socket cannot take more): with TLS, OpenSSL reads and writes the socket itself (an
``_ssl`` socket over it, no memory BIOs and no copies), one TLS record out per PUBLISH, and every
link reads into one shared buffer. Sockets are made by the ``_socket`` module, which gevent
never patches, so the fleet runs the same in a gevent process (a Locust worker) on a thread of
its own. The ``mqtt5`` package's sans-IO codec (Rust) reads and writes MQTT 5; the two packets
of every message are also done here directly, a PUBLISH written and the short PUBACK of a
delivered one read, in a fraction of the codec's per-call cost (the codec reads every other
packet). Every link calls the fleet back (:class:`LinkEvents`) on the loop's thread. uvloop
runs the loop when it is installed.

TLS contexts are shared: one per certificate and key, loaded once
(:class:`~simulator.mqtt.connect.TlsContexts`); a fleet on one certificate has one context for
every rider.

A link reconnects by itself after a lost connection or a failed attempt, with exponential
backoff and decorrelated jitter (1 s to 10 s, as the rider agent's client), so a fleet whose
broker restarts does not come back in step. Keep-alive pings, the connect timeout and the dead
link check are made by :meth:`Link.check`, which the fleet's one timer calls once a second for
every link, not by a timer per link.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import os
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import mqtt5

from alleycat_rider.mqtt import (
    KEEP_ALIVE_SEC,
    MAX_RECONNECT_DELAY_MS,
    MIN_RECONNECT_DELAY_MS,
    PING_TIMEOUT_MS,
    MqttSettings,
)
from simulator.mqtt.connect import (
    CONNECT_TIMEOUT,
    Endpoint,
    Resolver,
    TlsContexts,
    describe,
    find_rider_certificate,
)

_QOS1 = mqtt5.QoS.AT_LEAST_ONCE
_QOS0 = mqtt5.QoS.AT_MOST_ONCE
#: PUBACK reasons that mean the broker has the message (SUCCESS, NO_MATCHING_SUBSCRIBERS).
_DELIVERED = frozenset(
    {int(mqtt5.PubAckReasonCode.SUCCESS), int(mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS)}
)
_PINGREQ = mqtt5.PingReqPacket().write()
_DISCONNECT = mqtt5.DisconnectPacket().write()
#: The one buffer every link reads into (each read is handled at once).
_READ_SIZE = 64 * 1024
_READ_BUFFER = bytearray(_READ_SIZE)
_READ_VIEW = memoryview(_READ_BUFFER)
#: Topics as a PUBLISH carries them (their length, then UTF-8), encoded once.
_TOPICS: dict[str, bytes] = {}


class _Socket(_socket.socket):
    """A socket as the ``_socket`` module makes it (never gevent's), that ``_ssl`` can refer to."""

    __slots__ = ("__weakref__",)


def _fixed_header(first: int, size: int) -> bytes:
    """An MQTT packet's first byte and its remaining length ``size`` (a variable-length int)."""
    if size < 0x80:
        return bytes((first, size))
    if size < 0x4000:
        return bytes((first, size & 0x7F | 0x80, size >> 7))
    encoded = [first]
    while True:
        byte, size = size & 0x7F, size >> 7
        encoded.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(encoded)


# A link's states.
IDLE, CONNECTING, CONNECTED, WAITING, STOPPED = range(5)


class LinkEvents(Protocol):
    """What a link tells the fleet, on the event loop's thread."""

    def link_connected(self, index: int) -> None: ...

    def link_failed(self, index: int, message: str, refused: bool) -> None: ...

    def link_lost(self, index: int) -> None: ...

    def publish_done(
        self, index: int, token: int, delivered: bool, rejected: bool, code: str
    ) -> None: ...


class Link:
    """One rider's MQTT 5 connection; see the module doc.

    Args:
        loop: The event loop it lives on.
        events: The fleet, told what happens.
        index: The rider's index, passed back with every event.
        client_id: The MQTT client id.
        endpoint: Where to connect.
        context: The TLS context (None: plain TCP).
        cert: The certificate in ``context``, named in failures.
        settings: Keep-alive and reconnect timing (the other fields are not used).
        rng: Jitter for the reconnect delay.
        resolver: Broker addresses, shared by the links of a loop (None: a link's own).
    """

    __slots__ = (
        "_loop", "_events", "index", "_client_id", "endpoint", "_context", "_cert",
        "_keep_alive", "_ping_timeout", "_min_delay", "_max_delay", "_delay", "_rng",
        "_resolver", "state", "_sock", "_tls", "_fd", "_reading", "_out", "_lookup",
        "_retry", "_pending", "_next_id", "_buffer", "_last_read", "_last_write", "_deadline",
        "_error",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        events: LinkEvents,
        index: int,
        client_id: str,
        endpoint: Endpoint,
        context: ssl.SSLContext | None,
        cert: Path | None,
        settings: MqttSettings,
        rng: random.Random,
        resolver: Resolver | None = None,
    ) -> None:
        self._loop = loop
        self._events = events
        self.index = index
        self._client_id = client_id
        self.endpoint = endpoint
        self._context = context
        self._cert = cert
        self._keep_alive = settings.keep_alive_sec or KEEP_ALIVE_SEC
        self._ping_timeout = (settings.ping_timeout_ms or PING_TIMEOUT_MS) / 1000
        self._min_delay = (settings.min_reconnect_delay_ms or MIN_RECONNECT_DELAY_MS) / 1000
        self._max_delay = (settings.max_reconnect_delay_ms or MAX_RECONNECT_DELAY_MS) / 1000
        self._delay = self._min_delay
        self._rng = rng
        self._resolver = resolver or Resolver(loop)
        self.state = IDLE
        self._sock: Any = None
        """The connection's ``_socket.socket`` (gevent never patches it), while it is open."""
        self._tls: Any = None
        """Its TLS (an ``_ssl._SSLSocket`` on the socket: OpenSSL reads and writes the socket
        itself), or None for plain TCP."""
        self._fd = -1
        self._reading: Callable[[], None] | None = None
        """What the loop calls when the socket is readable (None: not watched)."""
        self._out: bytearray | None = None
        """Bytes the socket could not take yet (None: everything written)."""
        self._lookup: asyncio.Future[Any] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._pending: dict[int, int] = {}
        """Packet id -> the fleet's token, for the QoS 1 publishes not yet acknowledged."""
        self._next_id = 0
        self._buffer = b""
        self._last_read = self._last_write = self._deadline = 0.0
        self._error: BaseException | None = None

    # The fleet's side.

    def start(self) -> None:
        """Start connecting; :meth:`LinkEvents.link_connected` or ``link_failed`` follows."""
        if self.state in (IDLE, WAITING):
            self._retry = None
            self.state = CONNECTING
            self._deadline = time.monotonic() + CONNECT_TIMEOUT
            self._error = None
            self._connect()

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        """Send a publish; :meth:`LinkEvents.publish_done` with ``token`` follows (at once for
        QoS 0, on the PUBACK or the loss of the connection for QoS 1).

        Raises:
            ConnectionError: the link is not connected.
        """
        if self.state != CONNECTED:
            raise ConnectionError("not connected")
        name = _TOPICS.get(topic)
        if name is None:
            encoded = topic.encode()
            name = _TOPICS[topic] = len(encoded).to_bytes(2, "big") + encoded
        if qos:
            pending = self._pending
            packet_id = self._next_id % 65535 + 1
            while packet_id in pending:
                packet_id = packet_id % 65535 + 1
            self._next_id = packet_id
            pending[packet_id] = token
            # PUBLISH, QoS 1: the topic, the packet id, no properties, the payload.
            header = _fixed_header(0x32, len(name) + len(payload) + 3)
            self._write(b"".join((header, name, packet_id.to_bytes(2, "big"), b"\x00", payload)))
        else:
            header = _fixed_header(0x30, len(name) + len(payload) + 1)
            self._write(b"".join((header, name, b"\x00", payload)))
            self._events.publish_done(self.index, token, True, False, "WRITTEN")
        self._last_write = time.monotonic()

    def check(self, now: float) -> None:
        """Once a second: ping an idle connection, give up on a dead or a slow one."""
        state = self.state
        if state == CONNECTED:
            if now - self._last_read > self._keep_alive + self._ping_timeout:
                self._abort(TimeoutError("no answer to keep-alive pings"))
            elif now - self._last_write >= self._keep_alive:
                self._write(_PINGREQ)
                self._last_write = now
        elif state == CONNECTING and now > self._deadline:
            self._abort(TimeoutError())

    def stop(self) -> None:
        """Disconnect (a DISCONNECT, then the close) and stop reconnecting."""
        previous, self.state = self.state, STOPPED
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._lookup = None
        if self._sock is not None:
            if previous == CONNECTED and self._out is None:
                self._write(_DISCONNECT)
            self._lost(None)

    def abandon(self) -> None:
        """Close the socket now and stop reconnecting, telling the fleet nothing: the fleet
        stopped on a defect (what was in flight stays counted as in flight)."""
        self.state = STOPPED
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._lookup = None
        sock, self._sock, self._tls, self._out = self._sock, None, None, None
        if sock is not None:
            if self._reading is not None:
                self._loop.remove_reader(self._fd)
                self._reading = None
            self._loop.remove_writer(self._fd)
            self._fd = -1
            sock.close()

    @property
    def closed(self) -> bool:
        """Stopped, and its socket is closed."""
        return self.state == STOPPED and self._sock is None

    # Connecting: the broker's address, TCP, TLS, CONNECT and its CONNACK.

    def _connect(self) -> None:
        endpoint = self.endpoint
        address = self._resolver.address(endpoint.host, endpoint.port)
        if address is None:
            lookup = self._lookup = self._resolver.lookup(endpoint.host, endpoint.port)
            lookup.add_done_callback(self._looked_up)
            return
        family, where = address
        try:
            sock = self._sock = _Socket(family, _socket.SOCK_STREAM)
            self._fd = sock.fileno()
            sock.setblocking(False)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if endpoint.source is not None:
                sock.bind((endpoint.source, 0))
            code = sock.connect_ex(where)
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
        except OSError as exc:
            self._lost(exc)
            return
        self._loop.add_writer(self._fd, self._tcp_open)

    def _looked_up(self, lookup: asyncio.Future[Any]) -> None:
        if lookup is not self._lookup or self.state != CONNECTING:
            return  # stopped or given up on meanwhile
        self._lookup = None
        error = None if lookup.cancelled() else lookup.exception()
        endpoint = self.endpoint
        if error is None and self._resolver.address(endpoint.host, endpoint.port) is None:
            error = OSError(f"no address for {endpoint.host}")
        if error is not None:
            self._lost(error)
        else:
            self._connect()

    def _tcp_open(self) -> None:
        self._loop.remove_writer(self._fd)
        code = self._sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if code:
            self._lost(OSError(code, os.strerror(code)))
            return
        if self._context is None:
            self._opened()
            return
        try:
            self._tls = self._context._wrap_socket(  # type: ignore[attr-defined]
                self._sock, False, self.endpoint.host
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._lost(exc)
            return
        self._handshake()

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(self._handshake)
            return
        except ssl.SSLWantWriteError:  # pragma: no cover - a full socket buffer in a handshake
            self._watch(None)
            self._loop.add_writer(self._fd, self._handshake_writable)
            return
        except (ssl.SSLError, OSError) as exc:
            self._lost(exc)
            return
        self._opened()

    def _handshake_writable(self) -> None:  # pragma: no cover - see _handshake
        self._loop.remove_writer(self._fd)
        self._handshake()

    def _opened(self) -> None:
        self._watch(self._readable)
        self._buffer = b""
        self._last_read = self._last_write = time.monotonic()
        connect = mqtt5.ConnectPacket(
            self._client_id, clean_start=True, keep_alive=self._keep_alive
        )
        self._write(connect.write())

    def _watch(self, reading: Callable[[], None] | None) -> None:
        """Have the loop call ``reading`` when the socket is readable (None: stop watching)."""
        if reading != self._reading:
            if self._reading is not None:
                self._loop.remove_reader(self._fd)
            if reading is not None:
                self._loop.add_reader(self._fd, reading)
            self._reading = reading

    # Bytes out and in.

    def _write(self, data: bytes) -> None:
        """Write ``data`` now, or after what the socket could not take yet."""
        out = self._out
        if out is not None:
            out += data
            return
        try:
            if self._tls is not None:
                self._tls.write(data)  # all of it, or none (SSLWantWriteError)
                return
            written = self._sock.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            written = 0
        except OSError as exc:  # the connection is gone: in the loop's next pass, as a read
            self._loop.call_soon(self._abort_if, self._sock, exc)
            return
        if written < len(data):
            self._out = bytearray(data[written:])
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        out = self._out
        assert out is not None
        try:
            if self._tls is not None:
                # A retry after SSLWantWriteError takes the same bytes and more (OpenSSL
                # accepts a moved and longer buffer): all of it is written, or none.
                self._tls.write(out)
                written = len(out)
            else:
                written = self._sock.send(out)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del out[:written]
        if not out:
            self._out = None
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        tls = self._tls
        try:
            if tls is not None:
                size = tls.read(_READ_SIZE, _READ_BUFFER)
                while size < _READ_SIZE and tls.pending():  # the rest of a record OpenSSL holds
                    size += tls.read(_READ_SIZE - size, _READ_VIEW[size:])
            else:
                size = self._sock.recv_into(_READ_BUFFER)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return  # a part of a record, or a session ticket: nothing for us yet
        except ssl.SSLZeroReturnError:
            size = 0
        except OSError as exc:  # ssl.SSLError included: a broken connection, or TLS refused
            self._lost(exc)
            return
        if size == 0:  # the broker closed the connection
            self._lost(None)
            return
        self._last_read = time.monotonic()
        if self._buffer:
            data: bytes | memoryview = self._buffer + _READ_VIEW[:size]
            self._buffer = b""
            self._received(memoryview(data))
        else:
            self._received(_READ_VIEW[:size])

    def _received(self, view: memoryview) -> None:
        end = len(view)
        offset = 0
        pending = self._pending
        events = self._events
        try:
            while offset < end:
                # A PUBACK of a delivered message, without reason or properties: most of what
                # comes in, read here; everything else by the codec.
                if view[offset] == 0x40 and end - offset >= 4 and view[offset + 1] == 2:
                    token = pending.pop((view[offset + 2] << 8) | view[offset + 3], None)
                    offset += 4
                    if token is not None:
                        events.publish_done(self.index, token, True, False, "SUCCESS")
                    continue
                try:
                    packet, size = mqtt5.read(view[offset:])
                except IndexError:  # not all of it yet
                    break
                offset += size
                if type(packet) is mqtt5.PubAckPacket:
                    token = pending.pop(packet.packet_id, None)
                    if token is not None:
                        code = packet.reason_code
                        delivered = int(code) in _DELIVERED
                        events.publish_done(self.index, token, delivered, not delivered, code.name)
                else:
                    self._other(packet)
                if self._sock is None:
                    return  # closed by what it read
        except Exception as exc:  # bytes that are not MQTT 5: drop the connection, retry
            self._abort(exc)
            return
        if offset < end:
            self._buffer = bytes(view[offset:])

    def _other(self, packet: Any) -> None:
        if isinstance(packet, mqtt5.ConnAckPacket):
            code = packet.reason_code
            if code == mqtt5.ConnAckReasonCode.SUCCESS:
                self.state = CONNECTED
                self._delay = self._min_delay
                self._events.link_connected(self.index)
                return
            refused = int(code) >= 0x80
            message = (
                f"{self.endpoint} refused client id {self._client_id!r} ({code.name}): check "
                "the device's certificate, its policy and --client-id-prefix"
            )
            self._events.link_failed(self.index, message, refused)
            self.state = WAITING  # reported: its closing is not a second failure
            self._lost(None)
        elif isinstance(packet, mqtt5.DisconnectPacket):
            self._lost(None)
        # PINGRESP and anything else: read, nothing to do.

    # Losing the connection, and trying again.

    def _abort_if(self, sock: Any, error: BaseException) -> None:
        if sock is self._sock and sock is not None:
            self._abort(error)

    def _abort(self, error: BaseException) -> None:
        """Give up on this connection (or attempt) for ``error``: closed, failed or lost."""
        self._error = error
        if self._lookup is not None:
            self._lookup = None
        self._lost(error)

    def _lost(self, exc: BaseException | None) -> None:
        """The connection is closed or the attempt failed: tell, and retry unless stopped."""
        sock = self._sock
        if sock is not None:
            self._watch(None)
            if self._out is not None:
                self._out = None
                self._loop.remove_writer(self._fd)
            else:
                self._loop.remove_writer(self._fd)  # a TCP connect or a handshake under way
            self._sock = self._tls = None
            self._fd = -1
            sock.close()
        self._buffer = b""
        pending, self._pending = self._pending, {}
        for token in pending.values():
            self._events.publish_done(self.index, token, False, False, "CONNECTION_LOST")
        state = self.state
        if state == CONNECTED:
            self._events.link_lost(self.index)
        elif state == CONNECTING:  # before its CONNACK
            message, refused = describe(exc or self._error, self.endpoint, self._cert)
            self._events.link_failed(self.index, message, refused)
        if state != STOPPED:
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        self.state = WAITING
        delay = self._delay
        # Decorrelated jitter: the next wait is drawn between the least and three times this.
        self._delay = min(self._max_delay, self._rng.uniform(self._min_delay, delay * 3))
        self._retry = self._loop.call_later(delay, self.start)


def make_links(
    loop: asyncio.AbstractEventLoop,
    events: LinkEvents,
    *,
    client_ids: list[str],
    brokers: list[tuple[str, int]],
    sources: list[str],
    settings: MqttSettings,
    contexts: TlsContexts | None,
    certs_dir: Path | None,
    rng: random.Random,
    first_index: int = 0,
) -> list[Link]:
    """A link per client id, for riders ``first_index`` on: rider ``i`` on broker ``i mod B``,
    from the source addresses in turn over each broker's riders (the system's choice when
    ``sources`` is empty); TLS from ``contexts`` (None: plain TCP).

    Raises:
        CertificateError: the fleet's (or a rider's own) certificate cannot be used.
    """
    chosen: list[str | None] = list(sources) or [None]
    resolver = Resolver(loop)
    spread = [[Endpoint(host, port, source) for source in chosen] for host, port in brokers]
    links = []
    for index, client_id in enumerate(client_ids, start=first_index):
        context = None
        cert = settings.cert
        if contexts is not None:
            assert settings.cert is not None and settings.key is not None
            own = None if certs_dir is None else find_rider_certificate(certs_dir, client_id)
            cert, key = own if own is not None else (settings.cert, settings.key)
            context = contexts.get(cert, key)
        per_broker = spread[index % len(spread)]
        endpoint = per_broker[index // len(spread) % len(per_broker)]
        links.append(
            Link(loop, events, index, client_id, endpoint, context, cert, settings, rng, resolver)
        )
    return links
