"""The fleet's connection layer: thousands of MQTT 5 connections on one asyncio event loop.

Each rider's connection is one small :class:`Link`, an ``asyncio.BufferedProtocol`` (no task,
future or thread per rider or per message; every link reads into one shared buffer): bytes in
are read by the ``mqtt5`` package's sans-IO codec (Rust), bytes out are its encoded packets,
written to the loop's transport. Every link calls
the fleet back (:class:`LinkEvents`) on the loop's thread. uvloop runs the loop when it is
installed (its TLS transport costs about half of asyncio's own per connection).

TLS contexts are shared: one per certificate and key, loaded once (:class:`TlsContexts`); a
fleet on one certificate has one context for every rider.

A link reconnects by itself after a lost connection or a failed attempt, with exponential
backoff and decorrelated jitter (1 s to 10 s, as the rider agent's client), so a fleet whose
broker restarts does not come back in step. Keep-alive pings, the connect timeout and the dead
link check are made by :meth:`Link.check`, which the fleet's one timer calls once a second for
every link, not by a timer per link.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import mqtt5

from alleycat_rider.errors import CertificateError
from alleycat_rider.mqtt import (
    KEEP_ALIVE_SEC,
    MAX_RECONNECT_DELAY_MS,
    MIN_RECONNECT_DELAY_MS,
    PING_TIMEOUT_MS,
    MqttSettings,
    check_credentials,
)

#: Seconds a connection attempt (TCP, TLS and CONNACK) may take before it counts as failed.
CONNECT_TIMEOUT = 10.0

_QOS1 = mqtt5.QoS.AT_LEAST_ONCE
_QOS0 = mqtt5.QoS.AT_MOST_ONCE
#: PUBACK reasons that mean the broker has the message (SUCCESS, NO_MATCHING_SUBSCRIBERS).
_DELIVERED = frozenset(
    {int(mqtt5.PubAckReasonCode.SUCCESS), int(mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS)}
)
_PINGREQ = mqtt5.PingReqPacket().write()
#: The one buffer every link reads into (uvloop's TLS reads into it without a copy).
_READ_VIEW = memoryview(bytearray(64 * 1024))
_DISCONNECT = mqtt5.DisconnectPacket().write()

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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A broker's address, and the local address to connect from (None: the system's choice)."""

    host: str
    port: int
    source: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class TlsContexts:
    """Mutual-TLS contexts, one per certificate and key, each loaded once.

    Args:
        ca: The CA bundle to trust for the broker (None: the system's trust store).
    """

    def __init__(self, ca: Path | None) -> None:
        self.ca = ca
        self._contexts: dict[tuple[Path, Path], ssl.SSLContext] = {}

    def __len__(self) -> int:
        return len(self._contexts)

    def get(self, cert: Path, key: Path) -> ssl.SSLContext:
        """The context of ``cert`` and ``key``, made the first time.

        Raises:
            CertificateError: the files are missing, not PEM, or do not belong together.
        """
        context = self._contexts.get((cert, key))
        if context is None:
            context = self._contexts[(cert, key)] = self._make(cert, key)
        return context

    def _make(self, cert: Path, key: Path) -> ssl.SSLContext:
        check_credentials(MqttSettings(endpoint="", port=0, client_id="", cert=cert, key=key))
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=None if self.ca is None else str(self.ca)
            )
            context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"cannot use the device certificate {cert} with the key {key} and CA "
                f"{self.ca or '(system trust store)'}: do they belong together? ({exc})"
            ) from exc
        return context


def find_rider_certificate(directory: Path, client_id: str) -> tuple[Path, Path] | None:
    """A rider's own certificate and key in ``directory``, if there is one.

    Looked for as ``alleycat certs dev`` writes them (``<id>.crt`` and ``<id>.key``, in the
    folder or its ``devices/``) and as ``alleycat provision`` does (``<id>/certificate.pem.crt``
    and ``<id>/private.pem.key``).
    """
    for cert, key in (
        (directory / f"{client_id}.crt", directory / f"{client_id}.key"),
        (directory / "devices" / f"{client_id}.crt", directory / "devices" / f"{client_id}.key"),
        (directory / client_id / "certificate.pem.crt", directory / client_id / "private.pem.key"),
    ):
        if cert.is_file() and key.is_file():
            return cert, key
    return None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop if it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency, but the fleet works without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def describe(exc: BaseException | None, endpoint: Endpoint, cert: Path | None) -> tuple[str, bool]:
    """What a failed attempt means, in one line, and whether retrying cannot help (refused)."""
    where = str(endpoint)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS with {where} failed: the broker's certificate is not trusted or not for host "
            f"{endpoint.host} ({exc.verify_message}); check --ca and --mqtt-endpoint",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return (
            f"TLS with {where} failed ({reason}): the broker refused the device certificate "
            f"{cert}; check --cert/--key (or --certs-dir) and --ca",
            True,
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused", False
    if isinstance(exc, TimeoutError):
        return f"cannot connect to {where}: no answer within {CONNECT_TIMEOUT:.0f} s", False
    if isinstance(exc, OSError) and exc.errno == 24:
        return (
            f"cannot connect to {where}: too many open files (raise `ulimit -n`, or run fewer "
            "riders per process)",
            False,
        )
    if isinstance(exc, OSError) and exc.errno == 99:
        return (
            f"cannot connect to {where} from {endpoint.source}: no local port or address left "
            "(add --source-addresses)",
            False,
        )
    if exc is None:
        return f"{where} closed the connection before its CONNACK", False
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"cannot connect to {where}: {detail}", False


class Link(asyncio.BufferedProtocol):
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
    """

    __slots__ = (
        "_loop", "_events", "index", "_client_id", "endpoint", "_context", "_cert",
        "_keep_alive", "_ping_timeout", "_min_delay", "_max_delay", "_delay", "_rng",
        "state", "_transport", "_task", "_retry", "_pending", "_next_id", "_buffer",
        "_last_read", "_last_write", "_deadline", "_error",
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
        self.state = IDLE
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Future[Any] | None = None
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
            source = self.endpoint.source
            connecting = self._loop.create_connection(
                lambda: self,
                self.endpoint.host,
                self.endpoint.port,
                ssl=self._context,
                server_hostname=self.endpoint.host if self._context is not None else None,
                local_addr=None if source is None else (source, 0),
            )
            self._task = task = asyncio.ensure_future(connecting, loop=self._loop)
            task.add_done_callback(self._opened)

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        """Send a publish; :meth:`LinkEvents.publish_done` with ``token`` follows (at once for
        QoS 0, on the PUBACK or the loss of the connection for QoS 1).

        Raises:
            ConnectionError: the link is not connected.
        """
        transport = self._transport
        if self.state != CONNECTED or transport is None:
            raise ConnectionError("not connected")
        if qos:
            packet_id = self._next_id % 65535 + 1
            while packet_id in self._pending:
                packet_id = packet_id % 65535 + 1
            self._next_id = packet_id
            self._pending[packet_id] = token
            transport.write(
                mqtt5.PublishPacket(topic, payload, qos=_QOS1, packet_id=packet_id).write()
            )
        else:
            transport.write(mqtt5.PublishPacket(topic, payload, qos=_QOS0).write())
            self._events.publish_done(self.index, token, True, False, "WRITTEN")
        self._last_write = time.monotonic()

    def check(self, now: float) -> None:
        """Once a second: ping an idle connection, give up on a dead or a slow one."""
        state = self.state
        if state == CONNECTED:
            if now - self._last_read > self._keep_alive + self._ping_timeout:
                self._abort(TimeoutError("no answer to keep-alive pings"))
            elif now - self._last_write >= self._keep_alive and self._transport is not None:
                self._transport.write(_PINGREQ)
                self._last_write = now
        elif state == CONNECTING and now > self._deadline:
            self._abort(TimeoutError())

    def stop(self) -> None:
        """Disconnect (a DISCONNECT, then the close) and stop reconnecting."""
        previous, self.state = self.state, STOPPED
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        transport = self._transport
        if transport is not None:
            if previous == CONNECTED:
                transport.write(_DISCONNECT)
            transport.close()

    @property
    def closed(self) -> bool:
        """Stopped, and its transport is gone."""
        return self.state == STOPPED and self._transport is None

    # The event loop's side.

    def _opened(self, task: asyncio.Future[Any]) -> None:
        self._task = None
        if task.cancelled():
            error: BaseException | None = self._error or TimeoutError()
        else:
            error = task.exception()
        if error is not None and self.state == CONNECTING:
            self._failed(error)

    def connection_made(self, transport: Any) -> None:
        if self.state == STOPPED:
            transport.close()
            return
        self._transport = transport
        self._buffer = b""
        self._last_read = self._last_write = time.monotonic()
        connect = mqtt5.ConnectPacket(
            self._client_id, clean_start=True, keep_alive=self._keep_alive
        )
        transport.write(connect.write())

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW  # every link reads into one buffer: each read is handled at once

    def buffer_updated(self, nbytes: int) -> None:
        if self._buffer:
            data: bytes | memoryview = self._buffer + _READ_VIEW[:nbytes]
            view = memoryview(data)
        else:
            view = data = _READ_VIEW[:nbytes]
        end = len(view)
        offset = 0
        read = mqtt5.read
        try:
            while offset < end:
                try:
                    packet, size = read(view[offset:])
                except IndexError:  # not all of it yet
                    break
                offset += size
                if type(packet) is mqtt5.PubAckPacket:
                    token = self._pending.pop(packet.packet_id, None)
                    if token is not None:
                        code = packet.reason_code
                        delivered = int(code) in _DELIVERED
                        self._events.publish_done(
                            self.index, token, delivered, not delivered, code.name
                        )
                else:
                    self._other(packet)
        except Exception as exc:  # bytes that are not MQTT 5: drop the connection, retry
            self._buffer = b""
            self._abort(exc)
            return
        self._buffer = bytes(view[offset:]) if offset < end else b""
        self._last_read = time.monotonic()

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
            self._close_and_retry()
        elif isinstance(packet, mqtt5.DisconnectPacket):
            if self._transport is not None:
                self._transport.close()
        # PINGRESP and anything else: read, nothing to do.

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._buffer = b""
        pending, self._pending = self._pending, {}
        for token in pending.values():
            self._events.publish_done(self.index, token, False, False, "CONNECTION_LOST")
        state = self.state
        if state == CONNECTED:
            self._events.link_lost(self.index)
        elif state == CONNECTING:  # before its CONNACK
            self._failed(exc or self._error)
            return
        if state != STOPPED:
            self._schedule_retry()

    def _abort(self, error: BaseException) -> None:
        self._error = error
        if self._transport is not None:
            self._transport.abort()
        elif self._task is not None:
            self._task.cancel()

    def _failed(self, error: BaseException | None) -> None:
        message, refused = describe(error, self.endpoint, self._cert)
        self._events.link_failed(self.index, message, refused)
        if self._transport is not None:
            self.state = WAITING
            self._transport.abort()  # connection_lost schedules the retry
        else:
            self._schedule_retry()

    def _close_and_retry(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self.state == STOPPED:
            return
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
        links.append(Link(loop, events, index, client_id, endpoint, context, cert, settings, rng))
    return links
