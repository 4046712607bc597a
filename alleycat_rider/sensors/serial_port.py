"""What the serial sensors share: opening a port with a useful error, and a reader thread that
reopens the port when the bike's cable is pulled and plugged back in.

Imported only when a serial kind is chosen, because it imports pyserial.
"""

from __future__ import annotations

import errno
import threading
import time
from abc import abstractmethod

import serial

from alleycat_rider.errors import ConfigError, SensorError
from alleycat_rider.sensors.base import (
    Clock,
    LatestReading,
    Reading,
    Sensor,
    SensorOptions,
    SensorStats,
    next_delay,
)

#: How long one read waits for bytes; bounds how long :meth:`SerialSensor.close` takes.
READ_TIMEOUT = 0.1
#: A write that cannot finish in this long means the port is gone.
WRITE_TIMEOUT = 1.0


def open_serial_port(device: str, baud: int) -> serial.Serial:
    """Open ``device`` (a path or a pyserial URL) for reading and writing.

    Raises:
        SensorError: the port does not exist, is not ours to open, or is busy.
        ConfigError: the device or baud rate is not something pyserial accepts.
    """
    try:
        return serial.serial_for_url(
            device, baudrate=baud, timeout=READ_TIMEOUT, write_timeout=WRITE_TIMEOUT
        )
    except serial.SerialException as exc:
        raise SensorError(serial_error_message(device, exc)) from exc
    except ValueError as exc:
        raise ConfigError(f"cannot use serial device {device} at {baud} baud: {exc}") from exc


def serial_error_message(device: str, exc: OSError) -> str:
    """One line telling the rider why ``device`` did not open and what to do about it."""
    match exc.errno:
        case errno.ENOENT | errno.ENODEV | errno.ENXIO:
            return (
                f"serial device {device} does not exist: check the bike's cable is plugged in "
                "and pass the right --device (see `ls /dev/serial/by-id/`)"
            )
        case errno.EACCES | errno.EPERM:
            return (
                f"permission denied opening {device}: add your user to the dialout group "
                "(`sudo usermod -aG dialout $USER`, then log in again)"
            )
        case errno.EBUSY:
            return f"serial device {device} is busy: close the other program using it"
        case _:
            return f"cannot open serial device {device}: {exc}"


class SerialSensor(Sensor):
    """A sensor read by a background thread from a serial port.

    Subclasses implement :meth:`_serve`, which reads (and for request/response bikes, writes)
    until asked to stop, and lets :class:`serial.SerialException` or :class:`OSError` escape
    when the port goes away. The thread then reopens the port with a bounded backoff.
    """

    def __init__(self, options: SensorOptions, *, clock: Clock = time.monotonic) -> None:
        """Args:
        options: ``device``, ``baud`` and the timeouts.
        clock: stamps readings; ``time.monotonic`` unless a test needs its own.
        """
        if not options.device:
            raise ConfigError(f"--sensor {options.kind} needs --device")
        self.stats = SensorStats()
        self._options = options
        self._device = options.device
        self._clock = clock
        self._latest = LatestReading(options.effective_silence_timeout, clock(), self.stats)
        self._stop = threading.Event()
        self._port: serial.Serial | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the port and start reading it.

        Raises:
            SensorError: the port cannot be opened; the message says what to do.
        """
        if self._thread is not None:
            return
        self._port = open_serial_port(self._device, self._options.effective_baud)
        self._latest = LatestReading(
            self._options.effective_silence_timeout, self._clock(), self.stats
        )
        self._thread = threading.Thread(
            target=self._run, name=f"alleycat-{self._options.kind}-sensor", daemon=True
        )
        self._thread.start()

    def read(self, now: float) -> Reading:
        """The latest reading; cadence 0 if the bike has said nothing for the timeout."""
        return self._latest.read(now)

    def close(self) -> None:
        """Stop the reader thread and close the port; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        elif self._port is not None:
            self._port.close()
        self._port = None

    @abstractmethod
    def _serve(self, port: serial.Serial) -> None:
        """Read ``port`` until the stop event is set; raise when the port fails."""

    def _run(self) -> None:
        port = self._port
        try:
            while not self._stop.is_set():
                if port is None:
                    port = self._reopen()
                    continue
                try:
                    self._serve(port)
                except (serial.SerialException, OSError):
                    # The cable was pulled or the adapter reset: the bike reads as silent
                    # (zero cadence) until the port comes back.
                    port.close()
                    port = None
        finally:
            if port is not None:
                port.close()

    def _reopen(self) -> serial.Serial | None:
        delay = self._options.reconnect_min_delay
        while not self._stop.wait(delay):
            try:
                port = open_serial_port(self._device, self._options.effective_baud)
            except (SensorError, ConfigError):
                delay = next_delay(delay, self._options)
                continue
            self.stats.reconnects += 1
            return port
        return None

    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the sensor is closing."""
        return self._stop.wait(seconds)

    def _record(self, *, cadence: float | None = None, resistance: float | None = None) -> None:
        self._latest.update(self._clock(), cadence=cadence, resistance=resistance)
