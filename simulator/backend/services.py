"""The rule and the standings backend as running services: an MQTT link, a loop, a stop.

:class:`BackendLink` is the agent's own MQTT 5 adapter (:class:`~alleycat_rider.mqtt.MqttLink`)
used as a backend client: it subscribes again at every connect and turns lifecycle events into
one-line log messages. :func:`run_rule` and :func:`run_standings` run until a
:class:`threading.Event` is set, so ``alleycat rule``, ``alleycat standings`` and
``alleycat stack`` (which runs both on threads) share them. :func:`run_provisioning` answers
the fleet provisioning API for ``alleycat stack``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from alleycat_rider.mqtt import (
    Connected,
    ConnectionFailed,
    Disconnected,
    LinkEvent,
    MqttLink,
    MqttSettings,
    Received,
    Subscribed,
)
from simulator.backend.rule import IotRule
from simulator.backend.standings import Standings
from simulator.backend.tail import Page, StreamTail
from simulator.errors import BackendError

if TYPE_CHECKING:
    from simulator.backend.paho_link import PahoRuleLink
    from simulator.backend.provisioning import FleetProvisioning, Reply

#: How long a backend client's session outlives a disconnect on the broker.
SESSION_EXPIRY_SEC = 24 * 3600
#: QoS 1 messages the broker may have in flight to the rule at once (unacknowledged).
RULE_RECEIVE_MAXIMUM = 5000
#: Seconds to wait for the first connection before giving up with the broker's answer.
CONNECT_TIMEOUT = 15.0
#: Seconds between expiries of old races and uuids.
EXPIRE_EVERY = 30.0

Say = Callable[[str], None]


class BackendLink:
    """A backend's MQTT connection: subscribed at every connect, failures said once.

    Args:
        settings: Where and how to connect.
        subscriptions: Topic filters to subscribe to (QoS 0) at every connect.
        on_message: Called from the SDK's thread for every message; must not block.
        say: Where lifecycle news goes, one line each.
        name: How lines name this service.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        subscriptions: Sequence[str] = (),
        on_message: Callable[[Received], None] | None = None,
        say: Say,
        name: str,
    ) -> None:
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._say = say
        self._name = name
        self._connected = threading.Event()
        self._subscribed: set[str] = set()
        self._all_subscribed = threading.Event()
        self._ever_connected = False
        self._last_failure: str | None = None
        self.refused: str | None = None
        """Why the broker will not have this client, once it said so."""
        self._stopping = False
        self._link = MqttLink(settings, self._on_event)

    def start(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect; raise :class:`BackendError` if refused or not connected in ``timeout``."""
        self._link.start()
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.05):
            if self.refused is not None or time.monotonic() > deadline:
                self._link.stop()
                raise BackendError(
                    f"{self._name}: {self.refused or self._last_failure or 'no connection'}"
                )

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Queue a publish (QoS 0 standings are only worth sending while connected)."""
        self._link.publish(topic, payload, qos, 0)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_subscribed(self, timeout: float = CONNECT_TIMEOUT) -> bool:
        """Whether every subscription was granted within ``timeout`` seconds."""
        return self._all_subscribed.wait(timeout)

    def stop(self) -> None:
        self._stopping = True
        self._link.stop()

    def _on_event(self, event: LinkEvent) -> None:
        match event:
            case Received():
                if self._on_message is not None:
                    self._on_message(event)
            case Connected():
                for topic in self._subscriptions:
                    self._link.subscribe(topic)
                if self._ever_connected:
                    self._say(f"{self._name}: connected again")
                self._ever_connected = True
                self._last_failure = None
                self._connected.set()
            case Subscribed(topic=topic, granted=False, code=code):
                self.refused = f"the broker refused the subscription to {topic} ({code})"
                self._say(f"{self._name}: {self.refused}")
            case Subscribed(topic=topic, granted=True):
                self._subscribed.add(topic)
                if self._subscribed.issuperset(self._subscriptions):
                    self._all_subscribed.set()
            case ConnectionFailed(message=message, refused=refused):
                if refused:
                    self.refused = message
                if message != self._last_failure:
                    self._say(f"{self._name}: {message}; retrying")
                    self._last_failure = message
            case Disconnected(code=code):
                self._connected.clear()
                if not self._stopping:
                    self._say(f"{self._name}: disconnected ({code}); reconnecting")


def rule_link(
    settings: MqttSettings, rule: IotRule, topics: Sequence[str], *, say: Say
) -> PahoRuleLink:
    """The rule's connection: a persistent session, QoS 1, each message acknowledged by the rule
    (paho-mqtt: see :mod:`simulator.backend.paho_link`)."""
    from simulator.backend.paho_link import PahoRuleLink

    return PahoRuleLink(
        settings,
        subscriptions=[(topic, 1) for topic in topics],
        on_message=lambda m: rule.offer(m.topic, m.payload, m.ack),
        session_expiry_sec=SESSION_EXPIRY_SEC,
        receive_maximum=RULE_RECEIVE_MAXIMUM,
        say=say,
    )


def run_rule(rule: IotRule, link: PahoRuleLink, stop: threading.Event) -> None:
    """Write what the rule receives until ``stop``; then what can be written within a second.

    Messages still pending at the end are not acknowledged: the broker delivers them again when
    the rule's session comes back.
    """
    worker = threading.Thread(target=rule.run, args=(stop,), name="rule-writer", daemon=True)
    worker.start()
    try:
        while not stop.wait(0.2):
            if link.refused is not None:
                raise BackendError(f"rule: {link.refused}")
            if not worker.is_alive():
                break
    finally:
        stop.set()
        worker.join(5)
        link.stop()


def run_standings(
    standings: Standings,
    tail: StreamTail,
    link: BackendLink,
    stop: threading.Event,
    *,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Read the stream and publish standings until ``stop``."""
    expired_at = time.monotonic()
    try:
        while not stop.is_set():
            if link.refused is not None:
                raise BackendError(f"standings: {link.refused}")
            pages = read_once(standings, tail)
            if link.connected:
                standings.publish_due()
            if time.monotonic() - expired_at >= EXPIRE_EVERY:
                standings.expire()
                expired_at = time.monotonic()
            if on_tick is not None:
                on_tick()
            if not any(page.records for page in pages):
                stop.wait(0.05)
    finally:
        link.stop()
        standings.store.close()


def tail_for(
    standings: Standings, client: Any, stream: str, *, start: str, say: Say, where: str
) -> StreamTail:
    """A tail of ``stream`` that carries on from ``standings``' state if it was kept for this
    very stream; else the state starts over, the stream is read from its beginning, and one
    line (naming ``where`` the state was kept) says so."""
    from simulator.backend.tail import stream_identity

    identity = stream_identity(client, stream)
    kept_for = standings.follow(identity)
    if kept_for is not None:
        say(
            f"standings: {where} was kept for another stream ({kept_for}) than {stream} "
            f"({identity}): starting over from the stream's beginning"
        )
        start = "TRIM_HORIZON"
    return StreamTail(
        client,
        stream,
        start=start,
        positions=standings.positions,
        done=standings.done_shards,
        warn=say,
        identity=identity,
    )


def read_once(standings: Standings, tail: StreamTail) -> list[Page]:
    """One poll of the tail into the standings; a stream made again starts them over first."""
    pages = tail.poll()
    if tail.new_stream is not None:
        standings.follow(tail.new_stream)
        tail.new_stream = None
    for page in pages:
        standings.add_records(page.shard_id, page.records, done=page.done)
    standings.lag_ms = tail.lag_ms
    return pages


def provisioning_link(
    settings: MqttSettings, inbox: queue.SimpleQueue[Received], *, say: Say
) -> BackendLink:
    """The provisioning service's connection: the requests (and its own echoes) into ``inbox``."""
    from simulator.backend.acl import SYNC_TOPIC
    from simulator.backend.provisioning import REQUEST_TOPICS

    return BackendLink(
        settings,
        subscriptions=[*REQUEST_TOPICS, SYNC_TOPIC],
        on_message=inbox.put,
        say=say,
        name="provisioning",
    )


def start_provisioning(
    settings: MqttSettings,
    service: FleetProvisioning,
    *,
    reload_acl: Callable[[], None],
    say: Say,
) -> Callable[[threading.Event], None]:
    """Connect the provisioning service and subscribe; return its loop, to run until a stop.

    Raises:
        BackendError: The broker refused the connection or the subscriptions.
    """
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    link = provisioning_link(settings, inbox, say=say)
    link.start()
    if not link.wait_subscribed():
        link.stop()
        raise BackendError(f"provisioning: {link.refused or 'the subscriptions were not granted'}")
    return lambda stop: run_provisioning(service, link, inbox, stop, reload_acl=reload_acl, say=say)


def run_provisioning(
    service: FleetProvisioning,
    link: BackendLink,
    inbox: queue.SimpleQueue[Received],
    stop: threading.Event,
    *,
    reload_acl: Callable[[], None],
    say: Say | None = None,
) -> None:
    """Answer provisioning requests until ``stop``, one at a time (the API has no correlation).

    Each registration and each refusal is one line through ``say``.

    Before a RegisterThing is accepted, ``reload_acl`` writes the broker's ACL with the new
    thing and signals mosquitto, and two echoes through the broker make sure it has read it:
    mosquitto reloads between two rounds of network reads, so the second echo is read after
    the reload, and the bike, which connects with its new certificate only once it has the
    answer, finds its topic open.
    """
    from simulator.backend.acl import SYNC_TOPIC

    deferred: list[Received] = []
    try:
        while not stop.is_set():
            if link.refused is not None:
                raise BackendError(f"provisioning: {link.refused}")
            if deferred:
                message = deferred.pop(0)
            else:
                try:
                    message = inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
            if message.topic == SYNC_TOPIC:
                continue  # a late echo
            reply = service.handle(message.topic, message.payload)
            if reply is None:
                continue
            if reply.registered:
                reload_acl()
                for _ in range(2):
                    _echo(link, inbox, deferred, stop)
            link.publish(reply.topic, reply.payload, qos=1)
            if say is not None:
                _tell(reply, say)
    finally:
        link.stop()


def _tell(reply: Reply, say: Say) -> None:
    """One line for a registration and for a refusal (certificates made are not news)."""
    if reply.registered:
        template = reply.topic.split("/")[2]
        say(f"provisioning: {reply.body['thingName']} enrolled with the template {template}")
    elif reply.topic.endswith("/rejected"):
        request = reply.topic.removesuffix("/rejected")
        say(
            f"provisioning: refused {request}: {reply.body['errorMessage']} "
            f"({reply.body['errorCode']})"
        )


def _echo(
    link: BackendLink,
    inbox: queue.SimpleQueue[Received],
    deferred: list[Received],
    stop: threading.Event,
    timeout: float = 10.0,
) -> None:
    """Publish to the sync topic and wait for it to come back; requests meanwhile are kept."""
    from simulator.backend.acl import SYNC_TOPIC

    nonce = uuid.uuid4().hex.encode()
    link.publish(SYNC_TOPIC, nonce, qos=1)
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            message = inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        if message.topic == SYNC_TOPIC:
            if message.payload == nonce:
                return
        else:
            deferred.append(message)


def standings_link(settings: MqttSettings, *, say: Say) -> BackendLink:
    """The standings backend's connection: it only publishes (QoS 0)."""
    return BackendLink(settings, say=say, name="standings")


def open_stream(
    *,
    stream: str,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    create_stream: bool,
    shards: int,
) -> Any:
    """A :class:`~simulator.sinks.kinesis.KinesisSink` on the stream, created if asked."""
    from simulator.sinks.kinesis import KinesisSink
    from simulator.sinks.options import SinkOptions

    options = SinkOptions(
        stream=stream,
        shards=shards,
        region=region,
        profile=profile,
        endpoint_url=endpoint_url,
        create_stream=create_stream,
    )
    return KinesisSink.open(options, progress=sys.stderr)


def describe(counts: dict[str, Any]) -> str:
    """``received 1,200, written 1,200, ...`` for a status line."""
    return ", ".join(f"{name.replace('_', ' ')} {value:,}" for name, value in counts.items())
