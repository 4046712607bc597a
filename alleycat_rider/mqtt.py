"""The MQTT adapter: awscrt's MQTT 5 client, with mutual TLS to AWS IoT Core or a local broker.

The adapter never blocks in an SDK callback: every callback turns what happened into a
:class:`LinkEvent` and hands it to a sink (the agent's queue), which the agent's own loop reads.
awscrt errors are translated here into :class:`CertificateError` and :class:`PublishError`.

Choices that matter on a bike:

- keep-alive 30 s and a 10 s ping timeout, so a dead link is noticed within a minute;
- reconnect backoff from 1 s to 10 s with decorrelated jitter (a fleet does not reconnect in step);
- ``FAIL_ALL_ON_DISCONNECT``: the SDK keeps nothing in memory across a lost connection; QoS 1
  messages are in the agent's disk spool and are sent again from there;
- plain TCP only when the configuration allows it (loopback broker or ``--insecure``);
- :class:`Connected` carries the CONNACK's maximum QoS, for the agent to honour;
- a first connection that can never succeed says why in one line: a broker that answers in
  MQTT 3.1.1, a broker that closes a plain-TCP connection because it wants TLS, a TLS failure
  (which side refused is told sooner by :mod:`alleycat_rider.tlscheck`);
- the SDK's event-loop thread keeps its Python thread state between callbacks (see
  :func:`_keep_python_thread_state`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alleycat_rider.errors import CertificateError, PublishError

#: Seconds between keep-alive pings: with the ping timeout, a dead link shows within 40 s.
KEEP_ALIVE_SEC = 30
PING_TIMEOUT_MS = 10_000
MIN_RECONNECT_DELAY_MS = 1_000
MAX_RECONNECT_DELAY_MS = 10_000

#: Reason codes of a PUBACK that mean the broker has the message.
_DELIVERED = ("SUCCESS", "NO_MATCHING_SUBSCRIBERS")
#: CONNACK reason codes that retrying will not cure.
_REFUSED_CONNACK = (
    "CLIENT_IDENTIFIER_NOT_VALID",
    "BAD_USERNAME_OR_PASSWORD",
    "NOT_AUTHORIZED",
    "BANNED",
    "BAD_AUTHENTICATION_METHOD",
)
#: What awscrt reports when the CONNACK is not MQTT 5 (an MQTT 3.1.1 broker's answer).
_NOT_MQTT5 = "AWS_ERROR_MQTT5_DECODE_PROTOCOL_ERROR"
#: The broker closed the connection before any CONNACK.
_CLOSED = "AWS_IO_SOCKET_CLOSED"


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """Where and how to connect."""

    endpoint: str
    port: int
    client_id: str
    cert: Path | None = None
    """Device certificate (PEM); ``None`` for plain TCP."""
    key: Path | None = None
    ca: Path | None = None
    """CA bundle (PEM); ``None`` for the system trust store."""
    keep_alive_sec: int = KEEP_ALIVE_SEC
    ping_timeout_ms: int = PING_TIMEOUT_MS
    min_reconnect_delay_ms: int = MIN_RECONNECT_DELAY_MS
    max_reconnect_delay_ms: int = MAX_RECONNECT_DELAY_MS


@dataclass(frozen=True, slots=True)
class Connected:
    """The client is connected (again); subscriptions must be made anew."""

    maximum_qos: int = 2
    """The highest QoS the broker's CONNACK allows on this connection (2 when it sets none)."""


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """An attempt to connect failed; the client tries again by itself."""

    code: str
    """The awscrt error name or CONNACK reason, e.g. ``AWS_IO_SOCKET_CONNECTION_REFUSED``."""
    refused: bool
    """The broker refused this device (TLS or CONNACK): retrying will not help."""
    message: str
    """What happened and what the user can do, in one line."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """An established connection was lost."""

    code: str


@dataclass(frozen=True, slots=True)
class PublishDone:
    """A publish completed: written (QoS 0), acknowledged (QoS 1), or failed."""

    token: int
    """What the caller passed to :meth:`MqttLink.publish`."""
    delivered: bool
    """The broker has it (QoS 1) or it was written (QoS 0)."""
    rejected: bool
    """The broker answered with an error reason: sending it again will not help."""
    code: str
    """The PUBACK reason or the awscrt error name."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A subscription completed."""

    topic: str
    granted: bool
    """The broker granted it."""
    code: str
    """The SUBACK reason or the awscrt error name."""


@dataclass(frozen=True, slots=True)
class Received:
    """A message arrived on a subscribed topic."""

    topic: str
    payload: bytes


LinkEvent = Connected | ConnectionFailed | Disconnected | PublishDone | Subscribed | Received
EventSink = Callable[[LinkEvent], None]


def _error_code(exc: BaseException | None) -> str:
    if exc is None:
        return "UNKNOWN"
    name = getattr(exc, "name", None)
    return str(name) if name else type(exc).__name__


def describe_failure(
    exc: BaseException | None, connack: Any, settings: MqttSettings, *, first: bool = True
) -> ConnectionFailed:
    """Turn a failed connection attempt into an event saying whether retrying can help.

    Args:
        exc: The SDK's error.
        connack: The CONNACK, if one came.
        settings: The connection.
        first: No connection has succeeded yet. A broker that spoke MQTT 5 without TLS once and
            then closes a connection or answers garbage is in trouble, not misconfigured: only
            before a first connection do those count as refusals.
    """
    reason = getattr(getattr(connack, "reason_code", None), "name", None)
    where = f"{settings.endpoint}:{settings.port}"
    if reason in _REFUSED_CONNACK:
        return ConnectionFailed(
            code=str(reason),
            refused=True,
            message=f"{where} refused client id {settings.client_id!r} ({reason}): check the "
            "device's certificate, its policy and --client-id",
        )
    code = _error_code(exc)
    if code == _NOT_MQTT5 and connack is None and first:
        return ConnectionFailed(
            code=code,
            refused=True,
            message=f"{where} does not speak MQTT 5: it answered the MQTT 5 CONNECT with bytes "
            "MQTT 5 cannot read, as MQTT 3.1.1 brokers do; connect to an MQTT 5 broker "
            "(AWS IoT Core, mosquitto 1.6 or newer)",
        )
    if code == _CLOSED and connack is None and settings.cert is None and first:
        return ConnectionFailed(
            code=code,
            refused=True,
            message=f"{where} closed the connection during the MQTT handshake: it probably wants "
            "TLS; pass --cert/--key/--ca",
        )
    if code.startswith("AWS_IO_TLS") and settings.cert is not None:
        return ConnectionFailed(
            code=code,
            refused=True,
            message=f"TLS with {where} failed ({code}): either the broker's certificate is not "
            f"trusted by {settings.ca or 'the system trust store'} or not for host "
            f"{settings.endpoint}, or the broker refused the device certificate "
            f"{settings.cert}; check --ca, --endpoint, and --cert/--key",
        )
    return ConnectionFailed(code=code, refused=False, message=f"cannot connect to {where}: {code}")


def _keep_python_thread_state() -> None:
    """Keep the calling thread's Python thread state alive for as long as the thread lives.

    awscrt calls into Python from its own event-loop thread, between ``PyGILState_Ensure`` and
    ``PyGILState_Release``. On a thread Python did not start, that pair makes and destroys a
    thread state (and its 16 KB frame stack: an mmap, page faults and a munmap) on every
    callback, a sixth of that thread's CPU time at one publish a second. One more
    ``PyGILState_Ensure``, never released, makes every later callback reuse the thread state.
    Call it from an SDK callback, once per thread.
    """
    import ctypes  # imported here: only a connected link needs it

    ctypes.pythonapi.PyGILState_Ensure()


def _read_pem(path: Path, what: str, option: str, markers: tuple[str, ...]) -> None:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise CertificateError(f"the {what} {path} does not exist: check {option}") from None
    except OSError as exc:
        raise CertificateError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    if not any(f"-----BEGIN {marker}" in text for marker in markers):
        raise CertificateError(f"the {what} {path} is not a PEM file ({option})")


def check_credentials(settings: MqttSettings) -> None:
    """Check that the certificate, key and CA files exist and look like PEM.

    Raises:
        CertificateError: a file is missing, unreadable or not PEM.
    """
    if settings.cert is not None:
        _read_pem(settings.cert, "device certificate", "--cert", ("CERTIFICATE",))
    if settings.key is not None:
        _read_pem(settings.key, "private key", "--key", ("PRIVATE KEY", "EC PRIVATE", "RSA"))
    if settings.ca is not None:
        _read_pem(settings.ca, "CA certificate", "--ca", ("CERTIFICATE",))


def make_tls_context(settings: MqttSettings) -> Any:
    """A mutual-TLS context for ``settings``' certificate, key and CA (ALPN on port 443).

    Raises:
        CertificateError: the certificate, key and CA cannot be used together.
    """
    from awscrt import io

    check_credentials(settings)
    try:
        options = io.TlsContextOptions.create_client_with_mtls_from_path(
            str(settings.cert), str(settings.key)
        )
        if settings.ca is not None:
            options.override_default_trust_store_from_path(None, str(settings.ca))
        if settings.port == 443 and io.is_alpn_available():
            options.alpn_list = ["x-amzn-mqtt-ca"]  # IoT Core's MQTT over 443
        return io.ClientTlsContext(options)
    except RuntimeError as exc:
        raise CertificateError(
            f"cannot use the device certificate {settings.cert} with the key {settings.key}"
            f" and CA {settings.ca or '(system trust store)'}: do they belong together? "
            f"({exc})"
        ) from exc


class MqttLink:
    """One MQTT 5 connection that reconnects by itself; results arrive as events.

    Args:
        settings: Where and how to connect.
        sink: Called (from SDK threads) with every :data:`LinkEvent`; must not block.
        tls_context: A TLS context from :func:`tls_context` to share with other links of the
            same certificate (a fleet): one context loads the key and the trust store once,
            where each link would otherwise hold its own copy. Made from ``settings`` if None.

    Raises:
        CertificateError: the certificate, key or CA cannot be used.
        PublishError: the client cannot be built.
    """

    def __init__(
        self, settings: MqttSettings, sink: EventSink, *, tls_context: Any | None = None
    ) -> None:
        # Imported here: the SDK costs ~10 MB, and only a running agent needs it.
        from awscrt import mqtt5

        self._mqtt5 = mqtt5
        # Looked up once: an enum call per publish is measurable at one publish a second.
        self._qos_levels = (mqtt5.QoS.AT_MOST_ONCE, mqtt5.QoS.AT_LEAST_ONCE)
        self.settings = settings
        self._sink = sink
        self._stopped = threading.Event()
        self._threads_kept: set[int] = set()
        self._ever_connected = False
        check_credentials(settings)
        options: dict[str, Any] = {
            "keep_alive_interval_sec": settings.keep_alive_sec,
            "ping_timeout_ms": settings.ping_timeout_ms,
            "min_reconnect_delay_ms": settings.min_reconnect_delay_ms,
            "max_reconnect_delay_ms": settings.max_reconnect_delay_ms,
            "retry_jitter_mode": mqtt5.ExponentialBackoffJitterMode.DECORRELATED,
            "offline_queue_behavior": mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            "session_behavior": mqtt5.ClientSessionBehaviorType.CLEAN,
        }
        callbacks: dict[str, Any] = {
            "on_publish_received": self._on_publish_received,
            "on_lifecycle_connection_success": self._on_connection_success,
            "on_lifecycle_connection_failure": self._on_connection_failure,
            "on_lifecycle_disconnection": self._on_disconnection,
            "on_lifecycle_stopped": lambda _data: self._stopped.set(),
        }
        if settings.cert is not None and tls_context is None:
            tls_context = make_tls_context(settings)
        self._client = self._build(options, callbacks, tls_context)

    def _build(
        self, options: dict[str, Any], callbacks: dict[str, Any], tls_context: Any | None
    ) -> Any:
        """The client, as the IoT SDK's ``mqtt5_client_builder`` makes it (IoT Core's limits
        checked, no SDK metrics in the user name), on a TLS context of our choosing."""
        settings = self.settings
        mqtt5 = self._mqtt5
        connect = mqtt5.ConnectPacket(
            client_id=settings.client_id,
            keep_alive_interval_sec=options.pop("keep_alive_interval_sec"),
        )
        flow = mqtt5.ExtendedValidationAndFlowControlOptions
        return mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=settings.endpoint,
                port=settings.port,
                tls_ctx=tls_context,
                connect_options=connect,
                extended_validation_and_flow_control_options=(
                    flow.AWS_IOT_CORE_DEFAULTS if tls_context is not None else flow.NONE
                ),
                disable_metrics=True,
                on_publish_callback_fn=callbacks["on_publish_received"],
                on_lifecycle_event_connection_success_fn=callbacks[
                    "on_lifecycle_connection_success"
                ],
                on_lifecycle_event_connection_failure_fn=callbacks[
                    "on_lifecycle_connection_failure"
                ],
                on_lifecycle_event_disconnection_fn=callbacks["on_lifecycle_disconnection"],
                on_lifecycle_event_stopped_fn=callbacks["on_lifecycle_stopped"],
                **options,
            )
        )

    @property
    def client(self) -> Any:
        """The awscrt MQTT 5 client, for the SDK's service clients."""
        return self._client

    def start(self) -> None:
        """Start connecting; :class:`Connected` or :class:`ConnectionFailed` follows."""
        try:
            self._client.start()
        except Exception as exc:  # awscrt raises its own error types, or RuntimeError
            raise PublishError(f"cannot start the MQTT client: {exc}") from exc

    def publish(self, topic: str, payload: bytes, qos: int, token: int) -> None:
        """Queue a publish; a :class:`PublishDone` carrying ``token`` follows. Never blocks."""
        packet = self._mqtt5.PublishPacket(topic=topic, payload=payload, qos=self._qos_levels[qos])
        try:
            future = self._client.publish(packet)
        except Exception as exc:  # a closed client or an invalid packet
            raise PublishError(f"cannot publish to {topic}: {exc}") from exc
        future.add_done_callback(lambda done: self._on_publish_done(token, qos, done))

    def subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` at QoS 0 (standings are only worth having fresh).

        A :class:`Subscribed` event follows.
        """
        mqtt5 = self._mqtt5
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS.AT_MOST_ONCE)]
        )
        try:
            future = self._client.subscribe(packet)
        except Exception as exc:
            raise PublishError(f"cannot subscribe to {topic}: {exc}") from exc
        future.add_done_callback(lambda done: self._on_subscribe_done(topic, done))

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and stop reconnecting; wait up to ``timeout`` seconds for the client."""
        try:
            self._client.stop()
        except Exception as exc:
            raise PublishError(f"cannot stop the MQTT client: {exc}") from exc
        self._stopped.wait(timeout)

    def _on_publish_done(self, token: int, qos: int, future: Future[Any]) -> None:
        try:
            result = future.result()  # done already: one look, not two (exception, result)
        except Exception as exc:
            self._sink(PublishDone(token, delivered=False, rejected=False, code=_error_code(exc)))
            return
        puback = getattr(result, "puback", None)
        if qos == 0 or puback is None:
            self._sink(PublishDone(token, delivered=True, rejected=False, code="WRITTEN"))
            return
        # str() only for a code this SDK version has no name for: not on every PUBACK.
        reason = getattr(puback.reason_code, "name", None) or str(puback.reason_code)
        delivered = reason in _DELIVERED
        self._sink(PublishDone(token, delivered=delivered, rejected=not delivered, code=reason))

    def _on_subscribe_done(self, topic: str, future: Future[Any]) -> None:
        exc = future.exception()
        if exc is not None:
            self._sink(Subscribed(topic, granted=False, code=_error_code(exc)))
            return
        codes = getattr(future.result(), "reason_codes", None) or []
        code = getattr(codes[0], "name", str(codes[0])) if codes else "UNKNOWN"
        self._sink(Subscribed(topic, granted=code.startswith("GRANTED"), code=code))

    def _on_publish_received(self, data: Any) -> None:
        packet = data.publish_packet
        self._sink(Received(str(packet.topic), bytes(packet.payload or b"")))

    def _on_connection_success(self, data: Any) -> None:
        # The client's lifecycle events and publish completions come from one event-loop thread.
        thread = threading.get_ident()
        if thread not in self._threads_kept:
            self._threads_kept.add(thread)
            _keep_python_thread_state()
        self._ever_connected = True
        maximum_qos = getattr(getattr(data, "negotiated_settings", None), "maximum_qos", None)
        self._sink(Connected(2 if maximum_qos is None else int(maximum_qos)))

    def _on_connection_failure(self, data: Any) -> None:
        failure = describe_failure(
            data.exception, data.connack_packet, self.settings, first=not self._ever_connected
        )
        self._sink(failure)

    def _on_disconnection(self, data: Any) -> None:
        self._sink(Disconnected(_error_code(data.exception)))
