"""``--sensor serial``: any device that writes one ``<cadence>,<resistance>`` line per reading.

The protocol is documented in :mod:`alleycat_rider.sensors.serial_frames`: an Arduino on a reed
switch and a potentiometer can speak it in a dozen lines. The first line after the port opens is
dropped, because joining a stream mid-line would read the tail of a number as a whole one.
"""

from __future__ import annotations

import serial

from alleycat_rider.sensors.frames import FrameError
from alleycat_rider.sensors.serial_frames import LineSplitter, parse_reading_line
from alleycat_rider.sensors.serial_port import SerialSensor


class SerialLineSensor(SerialSensor):
    """Reads the line protocol from a serial port on a background thread."""

    def _serve(self, port: serial.Serial) -> None:
        splitter = LineSplitter(skip_first=True)
        while not self._stopping():
            data = port.read(max(1, port.in_waiting))
            for line in splitter.feed(data):
                try:
                    cadence, resistance = parse_reading_line(line)
                except FrameError:
                    self.stats.malformed += 1
                    continue
                self.stats.frames += 1
                self._record(cadence=cadence, resistance=resistance)
