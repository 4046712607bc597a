"""A quick TLS handshake with the broker, to say in seconds which side refuses the other.

awscrt's TLS (s2n) waits 10 to 30 s after a failed handshake before it reports the failure (its
"blinding", a defence against timing attacks), and its error does not say whose certificate was
refused. So when the agent's first connection is slow to come, it shakes hands once more with
Python's ``ssl``, which answers at once and tells the cases apart:

- the server's certificate is not trusted by ``--ca`` (or by the system trust store);
- the server's certificate is not for the host connected to (``--endpoint``);
- the broker refused the device certificate (an alert after the client's certificate).

Anything else (no answer, a reset, a refused TCP connection, a handshake the broker accepts) is
no verdict: the MQTT client carries on and reports what it finds. This module is imported only
when a check runs: ``ssl`` costs about 5 MB of resident memory, a sixth of the agent's.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

from alleycat_rider.mqtt import ConnectionFailed, MqttSettings

#: Seconds to wait for the broker's alert after the handshake: with TLS 1.3 the server checks the
#: client's certificate after the client considers the handshake done.
ALERT_WAIT = 1.0
#: OpenSSL verify codes meaning the certificate is valid but for another host or address.
_WRONG_HOST = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
#: Alerts a server sends about the client's certificate (parts of OpenSSL's reason names).
_CERTIFICATE_ALERTS = (
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_REQUIRED",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)
#: IoT Core's ALPN protocol for MQTT with a client certificate on port 443.
_IOT_ALPN = "x-amzn-mqtt-ca"


def start_tls_check(
    settings: MqttSettings, deliver: Callable[[ConnectionFailed | None], None]
) -> threading.Thread:
    """Run :func:`check_tls` on a thread of its own and hand its outcome to ``deliver``.

    Args:
        settings: The connection to check.
        deliver: Called once, from that thread, with the outcome; must not block.
    """
    thread = threading.Thread(
        target=lambda: deliver(check_tls(settings)), name="alleycat-tls-check", daemon=True
    )
    thread.start()
    return thread


def check_tls(settings: MqttSettings, *, timeout: float = 5.0) -> ConnectionFailed | None:
    """Shake hands with the broker once and say which side refuses, if one does.

    Args:
        settings: The agent's connection (with a device certificate and key).
        timeout: Seconds for the TCP connection and the handshake.

    Returns:
        A refusal (``refused=True``) whose message names the side that failed, or ``None``
        when the handshake does not tell (accepted, no answer, a network error).
    """
    if settings.cert is None or settings.key is None:
        return None
    try:
        context = ssl.create_default_context(
            cafile=None if settings.ca is None else str(settings.ca)
        )
        # A password callback: an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(settings.cert, settings.key, password=lambda: b"")
        if settings.port == 443:
            context.set_alpn_protocols([_IOT_ALPN])
    except (ssl.SSLError, OSError, ValueError):
        return None  # the MQTT client's own checks report unusable files
    try:
        with (
            socket.create_connection((settings.endpoint, settings.port), timeout) as raw,
            context.wrap_socket(raw, server_hostname=settings.endpoint) as tls,
        ):
            tls.settimeout(ALERT_WAIT)
            tls.recv(1)  # the broker says nothing before CONNECT, unless it refuses us
    except ssl.SSLCertVerificationError as exc:
        return server_refused(settings, exc.verify_code, exc.verify_message)
    except ssl.SSLError as exc:
        return device_refused(settings, exc.reason or "")
    except OSError:  # a timeout (the broker accepted and waits), a reset, no route
        return None
    return None


def server_refused(settings: MqttSettings, verify_code: int, detail: str) -> ConnectionFailed:
    """The refusal for a server certificate this device does not accept.

    Args:
        settings: The connection.
        verify_code: OpenSSL's verify code.
        detail: OpenSSL's verify message.
    """
    where = f"{settings.endpoint}:{settings.port}"
    if verify_code in _WRONG_HOST:
        return ConnectionFailed(
            code="SERVER_CERTIFICATE_WRONG_HOST",
            refused=True,
            message=f"TLS with {where} failed: the server's certificate is not for host "
            f"{settings.endpoint} ({detail}): connect with --endpoint set to a name the "
            "broker's certificate is for",
        )
    trust = "the system trust store" if settings.ca is None else f"--ca {settings.ca}"
    hint = (
        "pass --ca with the CA that signed the broker's certificate"
        if settings.ca is None
        else "pass the CA that signed the broker's certificate as --ca"
    )
    return ConnectionFailed(
        code="SERVER_CERTIFICATE_UNTRUSTED",
        refused=True,
        message=f"TLS with {where} failed: the server's certificate is not trusted by {trust} "
        f"({detail}): {hint}",
    )


def device_refused(settings: MqttSettings, reason: str) -> ConnectionFailed | None:
    """The refusal for an alert the broker sent about the device certificate, if it is one.

    Args:
        settings: The connection.
        reason: OpenSSL's reason, e.g. ``TLSV1_ALERT_UNKNOWN_CA``.
    """
    if "ALERT" not in reason or not any(alert in reason for alert in _CERTIFICATE_ALERTS):
        return None
    return ConnectionFailed(
        code="DEVICE_CERTIFICATE_REFUSED",
        refused=True,
        message=f"TLS with {settings.endpoint}:{settings.port} failed: the broker refused the "
        f"device certificate {settings.cert} ({reason}): use a certificate and key issued by "
        "the CA the broker trusts",
    )
