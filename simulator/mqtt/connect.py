"""Where and how the fleet's links connect: brokers' endpoints, the TLS contexts shared by every
rider on one certificate, a rider's own certificate in a folder, the addresses of brokers' names
looked up once for every link waiting on them, and what a failed attempt means in one line."""

from __future__ import annotations

import _socket
import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alleycat_rider.errors import CertificateError
from alleycat_rider.mqtt import MqttSettings, check_credentials

#: Seconds a connection attempt (TCP, TLS and CONNACK) may take before it counts as failed.
CONNECT_TIMEOUT = 10.0
#: Seconds a broker's looked-up address is used before it is looked up again.
RESOLVE_EVERY = 60.0
_NUMERIC = _socket.AI_NUMERICHOST


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


class Resolver:
    """Broker addresses for the links of one event loop, looked up once a minute at most.

    A numeric address needs no lookup; a name is looked up by the loop (off its thread), and
    every link waiting for the same name waits for the same lookup.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._known: dict[tuple[str, int], tuple[float, int, tuple[Any, ...]]] = {}
        self._asking: dict[tuple[str, int], asyncio.Future[Any]] = {}

    def address(self, host: str, port: int) -> tuple[int, tuple[Any, ...]] | None:
        """``(family, address)`` of ``host:port`` if known now (None: :meth:`lookup` it)."""
        known = self._known.get((host, port))
        if known is not None and known[0] > time.monotonic():
            return known[1], known[2]
        try:
            found = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, 0, _NUMERIC)
        except OSError:  # a name, not an address
            return None
        family, _type, _proto, _name, address = found[0]
        self._known[(host, port)] = (float("inf"), family, address)
        return family, address

    def lookup(self, host: str, port: int) -> asyncio.Future[Any]:
        """The loop's lookup of ``host:port``; :meth:`address` knows the answer once it is done."""
        key = (host, port)
        asking = self._asking.get(key)
        if asking is None:
            lookup = self._loop.getaddrinfo(host, port, type=_socket.SOCK_STREAM)
            asking = self._asking[key] = asyncio.ensure_future(lookup, loop=self._loop)
            asking.add_done_callback(lambda done: self._found(key, done))
        return asking

    def _found(self, key: tuple[str, int], done: asyncio.Future[Any]) -> None:
        del self._asking[key]
        if not done.cancelled() and done.exception() is None and done.result():
            family, _type, _proto, _name, address = done.result()[0]
            self._known[key] = (time.monotonic() + RESOLVE_EVERY, family, address)
