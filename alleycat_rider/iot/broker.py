"""mosquitto as a local stand-in for AWS IoT Core: mutual TLS on 127.0.0.1.

The broker is configured like IoT Core as the agent sees it: a client certificate signed by the
development CA is required, and the certificate's common name becomes the user name (as the thing
name does on IoT Core). It does not enforce IoT Core's policies or limits.

::

    AlleycatError
    └── BrokerError             mosquitto cannot be started
        └── MosquittoNotFound   mosquitto is not installed
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from alleycat_rider.errors import AlleycatError
from alleycat_rider.iot.devcerts import DevPki

#: The MQTT-over-TLS port AWS IoT Core listens on, and ``alleycat broker``'s default.
DEFAULT_PORT = 8883
#: The only address the development broker listens on.
LOCALHOST = "127.0.0.1"
#: Where to look for mosquitto when it is not on ``PATH`` (``/usr/sbin`` often is not).
MOSQUITTO_LOCATIONS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)

INSTALL_HINT = "install mosquitto: sudo apt-get install mosquitto"


class BrokerError(AlleycatError):
    """mosquitto cannot be started or did not start listening."""


class MosquittoNotFound(BrokerError):
    """The mosquitto binary is not installed."""


def find_mosquitto() -> str:
    """The path of the mosquitto binary.

    Raises:
        MosquittoNotFound: mosquitto is neither on ``PATH`` nor in a usual ``sbin`` directory.
    """
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in MOSQUITTO_LOCATIONS:
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise MosquittoNotFound(f"mosquitto is not installed: {INSTALL_HINT}")


def mosquitto_config(
    pki: DevPki, *, port: int, host: str = LOCALHOST, extra: Sequence[str] = ()
) -> str:
    """The mosquitto configuration for a mutual-TLS listener on ``host:port``.

    Args:
        pki: The development PKI whose CA and server certificate the broker uses.
        port: The TCP port to listen on.
        host: The address to listen on.
        extra: More configuration lines (limits, an ``acl_file``).

    Returns:
        The text of a mosquitto 2.0 configuration file.
    """
    # mosquitto started as root drops to the `mosquitto` user, which cannot read keys that are
    # readable by their owner only. Naming the current user keeps it; it is ignored for non-root.
    user = pwd.getpwuid(os.geteuid()).pw_name
    return "\n".join(
        [
            f"user {user}",
            "persistence false",
            "log_dest stderr",
            "allow_anonymous false",
            f"listener {port} {host}",
            f"cafile {pki.ca_cert.resolve()}",
            f"certfile {pki.server_cert.resolve()}",
            f"keyfile {pki.server_key.resolve()}",
            "require_certificate true",
            "use_identity_as_username true",
            *extra,
            "",
        ]
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port``.

    Probed by binding rather than connecting, so the broker does not log a failed TLS handshake
    for every probe. ``SO_REUSEADDR`` lets the bind succeed over connections in TIME_WAIT (as
    after a restart) while still failing against a listening socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
        return False


class MosquittoBroker:
    """A mosquitto subprocess with mutual TLS, listening on 127.0.0.1.

    It can be stopped and started again on the same port (to simulate an outage), and is a
    context manager that stops it on exit.

    Args:
        pki: The development PKI (CA, server certificate and key).
        port: The port to listen on.
        log: Where mosquitto's log goes: a binary file, or ``None`` for this process's stderr.
        binary: The mosquitto binary (default: found with :func:`find_mosquitto`).
        extra_config: More mosquitto configuration lines.
    """

    def __init__(
        self,
        pki: DevPki,
        *,
        port: int = DEFAULT_PORT,
        log: IO[bytes] | None = None,
        binary: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.pki = pki
        self._extra_config = tuple(extra_config)
        self.host = LOCALHOST
        self.port = port
        self._log = log
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        """mosquitto's process id while it runs (to measure it), else None."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections.

        Args:
            timeout: Seconds to wait for the listener.

        Raises:
            MosquittoNotFound: mosquitto is not installed.
            BrokerError: The port is in use, or mosquitto exited at once (an unreadable key) or
                never listened.
        """
        if self.running:
            return
        binary = self._binary or find_mosquitto()
        if port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is in use: stop what listens there "
                "or choose another port"
            )
        self._workdir = tempfile.TemporaryDirectory(prefix="alleycat-mosquitto-")
        config = Path(self._workdir.name) / "mosquitto.conf"
        config.write_text(
            mosquitto_config(self.pki, port=self.port, host=self.host, extra=self._extra_config)
        )
        try:
            self._process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=self._log if self._log is not None else None,
                stderr=self._log if self._log is not None else None,
                # Out of the terminal's process group, so that Ctrl-C reaches only us and we stop
                # mosquitto ourselves, in order.
                start_new_session=True,
            )
        except OSError as exc:
            self._cleanup()
            raise BrokerError(f"cannot run {binary}: {exc}") from exc
        try:
            self.wait_until_accepting(timeout)
        except BrokerError:
            self.stop()
            raise

    def wait_until_accepting(self, timeout: float = 10.0) -> None:
        """Block until mosquitto listens on its port.

        Raises:
            BrokerError: mosquitto exited, or did not listen within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise BrokerError(
                    f"mosquitto exited (status {code}) instead of listening on "
                    f"{self.host}:{self.port}: see mosquitto's log"
                )
            if port_in_use(self.host, self.port):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after ``timeout`` seconds); idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._cleanup()

    def wait(self) -> int:
        """Block until mosquitto exits on its own; return its exit status."""
        if self._process is None:
            return 0
        return self._process.wait()

    def _cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
