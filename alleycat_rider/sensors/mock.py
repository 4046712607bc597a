"""A rider with no bike: the shared rider model, seeded, for trying the agent out.

The model takes one step per whole second of ``now`` since the first read, so a seed and the
times the agent reads at decide every value: two runs with the same seed ride the same race.
"""

from __future__ import annotations

import math
import random

from alleycat_rider.core.physiology import RiderModel, RiderProfile
from alleycat_rider.sensors.base import Reading, Sensor, SensorOptions, SensorStats


class MockSensor(Sensor):
    """Readings from :class:`~alleycat_rider.core.physiology.RiderModel`, one step a second."""

    def __init__(self, options: SensorOptions) -> None:
        """Args:
        options: ``seed`` picks the rider and their ride; ``bounds`` the range they ride in.
        """
        self.stats = SensorStats()
        self._rng = random.Random(options.seed)
        self._model = RiderModel(profile=RiderProfile.draw(self._rng), bounds=options.bounds)
        self._first_read_at: float | None = None
        self._steps = 0
        self._last = Reading(0.0, 0.0, 0.0)

    def start(self) -> None:
        """Nothing to open: the model is ready."""

    def read(self, now: float) -> Reading:
        """The rider's reading for the current second, stepping the model up to ``now``."""
        if self._first_read_at is None:
            self._first_read_at = now
        # The first read takes the first step, so there is a value from the start.
        due = math.floor(now - self._first_read_at) + 1
        while self._steps < due:
            cadence, resistance = self._model.step(self._rng)
            self._last = Reading(cadence, resistance, self._first_read_at + self._steps)
            self._steps += 1
            self.stats.frames += 1
        return self._last

    def close(self) -> None:
        """Nothing to close."""
