"""Errors of the fleet simulator, all below one root so the CLI can turn each into one clear line.

::

    SimulatorError
    ├── ConfigurationError   options that cannot work together
    ├── BackendError         a local backend service cannot run (refused by the broker)
    └── SinkError            the stream cannot be written
        ├── RetryableSinkError   a whole request failed in a way that can pass (throttling of the
        │                        API, timeouts, connection errors, 5xx): the batch is retried
        └── FatalSinkError       a failure that retrying cannot fix (no such stream, access
                                 denied, no credentials): the run stops with the message
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of the simulator's errors; its message says what the user can do."""


class ConfigurationError(SimulatorError):
    """Options that cannot work together."""


class BackendError(SimulatorError):
    """A backend service cannot run (the broker refused it, a subscription was denied)."""


class SinkError(SimulatorError):
    """The stream cannot be written."""


class RetryableSinkError(SinkError):
    """A whole PutRecords request failed, but the same request may pass later.

    ``outcome_unknown`` is set when the request reached the server and no answer came back (a
    read timeout, a connection closed mid-request): its records may be in the stream.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class FatalSinkError(SinkError):
    """Writing cannot go on: retrying will not help."""
