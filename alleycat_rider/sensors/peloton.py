"""``--sensor peloton``: an original Peloton bike, asked for cadence and resistance like its head
unit asks, about every 100 ms, over its serial line (19200 baud).

The bike's resistance is a raw number whose meaning differs from bike to bike; give
``peloton_resistance_map`` calibration points to turn it into a level, or the raw value is sent.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence

import serial

from alleycat_rider.sensors.frames import FrameError, check_cadence
from alleycat_rider.sensors.serial_frames import (
    PelotonCode,
    PelotonSplitter,
    parse_peloton_response,
    peloton_request,
)
from alleycat_rider.sensors.serial_port import SerialSensor

#: The head unit polls about every 100 ms.
POLL_INTERVAL = 0.1
#: How long to wait for an answer before asking again.
RESPONSE_TIMEOUT = 0.25
#: What the head unit asks for, in turn.
POLLED = (PelotonCode.CADENCE, PelotonCode.RESISTANCE)


def map_resistance(raw: float, table: Sequence[tuple[float, float]]) -> float:
    """The resistance level for ``raw``, interpolated between (raw, level) points.

    Below the first point or above the last, the nearest point's level is used: the knob has
    stops, and a reading past them is noise. An empty table returns ``raw``.
    """
    if not table:
        return raw
    points = sorted(table)
    raws = [point[0] for point in points]
    index = bisect_left(raws, raw)
    if index == 0:
        return points[0][1]
    if index == len(points):
        return points[-1][1]
    (raw0, level0), (raw1, level1) = points[index - 1], points[index]
    return level0 + (level1 - level0) * (raw - raw0) / (raw1 - raw0)


class PelotonSensor(SerialSensor):
    """Polls a Peloton bike over serial on a background thread."""

    def _serve(self, port: serial.Serial) -> None:
        splitter = PelotonSplitter()
        while not self._stopping():
            for code in POLLED:
                self._exchange(port, splitter, code)
                if self._wait(POLL_INTERVAL):
                    return

    def _exchange(self, port: serial.Serial, splitter: PelotonSplitter, code: PelotonCode) -> None:
        """Ask for ``code`` and take what the bike answers until it answers that, or time's up."""
        if splitter.clear():
            # Half a response that never finished: count it, so a bad cable shows.
            self.stats.malformed += 1
        port.write(peloton_request(code))
        # Real time, not the injected clock: this is how long we wait, not when data arrived.
        deadline = time.monotonic() + RESPONSE_TIMEOUT
        while not self._stopping() and time.monotonic() < deadline:
            for chunk in splitter.feed(port.read(max(1, port.in_waiting))):
                if self._take(chunk) == code:
                    return

    def _take(self, chunk: bytes) -> int | None:
        """Parse one chunk and record its value; return the code it answered, if valid."""
        try:
            response = parse_peloton_response(chunk)
            match response.code:
                case PelotonCode.CADENCE:
                    self._record(cadence=check_cadence(float(response.value)))
                case PelotonCode.RESISTANCE:
                    table = self._options.peloton_resistance_map
                    self._record(resistance=map_resistance(float(response.value), table))
                case _:
                    pass  # Power, or a code we did not ask for: valid, but not ours to use.
        except FrameError:
            self.stats.malformed += 1
            return None
        self.stats.frames += 1
        return response.code
