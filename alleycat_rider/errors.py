"""Errors of the rider agent, all below one root so the CLI can turn each into one clear line.

::

    AlleycatError
    ├── ConfigError        bad configuration: a flag, a config file, an environment variable
    ├── CertificateError   a certificate or key that is missing, unreadable or refused
    ├── SensorError        a sensor that cannot be opened or found
    ├── SpoolError         the local QoS 1 spool cannot be opened or written
    ├── PublishError       the MQTT client cannot be built, connected or used
    ├── BrokerError        the local mosquitto cannot run (``broker.py``)
    │   └── MosquittoNotFound
    └── ProvisionError     AWS IoT refused or could not be reached (``provision.py``)

Pure parsers raise ``ValueError`` subclasses of their own (``MessageError``, ``FrameError``,
``ResultsError``): bad input from a sensor or the network is counted and skipped, never fatal.
"""

from __future__ import annotations


class AlleycatError(Exception):
    """Root of the rider agent's errors; its message says what the user can do."""


class ConfigError(AlleycatError):
    """Configuration that cannot be used."""


class CertificateError(AlleycatError):
    """A certificate or private key that is missing, unreadable or refused."""


class SensorError(AlleycatError):
    """A sensor that cannot be opened, found or read."""


class SpoolError(AlleycatError):
    """The local spool of unacknowledged QoS 1 messages cannot be used."""


class PublishError(AlleycatError):
    """The MQTT client cannot be built, connected or used."""
