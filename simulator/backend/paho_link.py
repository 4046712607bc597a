"""The rule's MQTT connection, on paho-mqtt: QoS 1 in a persistent session, acknowledged by hand.

The rule acknowledges a message from its writer thread, once the stream has it. awscrt's manual
PUBACK (``invoke_publish_acknowledgement``) called from a thread of ours was seen to leave its
client hung after a session was rejoined (the client reported a hang-up and never reconnected, in
one run of four), so the rule uses paho-mqtt, whose ``ack()`` is documented as callable from any
thread. Everything else (the agent, the fleet, the standings publisher) stays on awscrt.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alleycat_rider.mqtt import MqttSettings
from simulator.errors import BackendError

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message from the broker; ``ack`` sends its PUBACK (None for QoS 0)."""

    topic: str
    payload: bytes
    ack: Callable[[], None] | None


#: paho's CONNACK reasons that retrying will not cure.
_REFUSED = {"Not authorized", "Bad user name or password", "Client identifier not valid", "Banned"}


class PahoRuleLink:
    """A persistent-session MQTT 5 subscriber whose messages carry an ``ack`` to call later.

    The same face as :class:`~simulator.backend.services.BackendLink`: ``start``, ``stop``,
    ``connected``, ``refused``.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        subscriptions: Sequence[tuple[str, int]],
        on_message: Callable[[Delivery], None],
        session_expiry_sec: int,
        receive_maximum: int,
        say: Say,
        name: str = "rule",
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._settings = settings
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._say = say
        self._name = name
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._unanswered: set[int] = set()
        self._ever_connected = False
        self._stopping = False
        self._last_failure: str | None = None
        self.refused: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if settings.cert is not None:
            context = ssl.create_default_context(
                cafile=None if settings.ca is None else str(settings.ca)
            )
            context.load_cert_chain(str(settings.cert), str(settings.key))
            client.tls_set_context(context)
        client.reconnect_delay_set(
            max(1, settings.min_reconnect_delay_ms // 1000),
            max(1, settings.max_reconnect_delay_ms // 1000),
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_paho_message
        client.on_subscribe = self._on_subscribe
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_sec
        properties.ReceiveMaximum = receive_maximum
        self._properties = properties
        self._client = client

    def start(self, timeout: float = 15.0) -> None:
        """Connect and subscribe; raise BackendError if refused or not done within ``timeout``.

        Returns once the broker has granted every subscription: a message published after that
        reaches the rule (before it, on a first start, the broker has no one to keep it for).
        """
        try:
            self._client.connect(
                self._settings.endpoint,
                self._settings.port,
                keepalive=self._settings.keep_alive_sec,
                clean_start=False,
                properties=self._properties,
            )
        except (OSError, ssl.SSLError) as exc:
            raise BackendError(
                f"{self._name}: cannot connect to {self._settings.endpoint}:"
                f"{self._settings.port}: {exc}"
            ) from None
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while not (self._connected.wait(0.05) and self._subscribed.is_set()):
            if self.refused is not None or time.monotonic() > deadline:
                self.stop()
                raise BackendError(
                    f"{self._name}: {self.refused or self._last_failure or 'no connection'}"
                )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: Any, _userdata: Any, flags: Any, reason: Any, _properties: Any
    ) -> None:
        if reason.is_failure:
            message = f"the broker refused {self._settings.client_id!r}: {reason}"
            if str(reason) in _REFUSED:
                self.refused = message
            if message != self._last_failure:
                self._say(f"{self._name}: {message}; retrying")
                self._last_failure = message
            return
        for topic, qos in self._subscriptions:
            _result, mid = client.subscribe(topic, qos=qos)
            self._unanswered.add(mid)
        if self._ever_connected:
            self._say(f"{self._name}: connected again")
        self._ever_connected = True
        self._last_failure = None
        self._connected.set()

    def _on_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: Any, _properties: Any
    ) -> None:
        for reason in reasons:
            if reason.is_failure:
                self.refused = f"the broker refused a subscription ({reason})"
                self._say(f"{self._name}: {self.refused}")
                return
        self._unanswered.discard(mid)
        if not self._unanswered:
            self._subscribed.set()

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        self._connected.clear()
        if not self._stopping:
            self._say(f"{self._name}: disconnected ({reason}); reconnecting")

    def _on_paho_message(self, client: Any, _userdata: Any, message: Any) -> None:
        mid, qos = message.mid, message.qos
        ack = (lambda: client.ack(mid, qos)) if qos > 0 else None
        self._on_message(Delivery(str(message.topic), bytes(message.payload), ack))
