"""A believable rider, second by second: cadence and resistance from a small physiological model.

Each rider has an ability (how hard they can push), warms up over the first part of a race,
alternates efforts and recoveries, tires as the race goes on, and reads through a noisy sensor.
Values stay within configurable bounds (the original's 30..90 rpm and 33..86 by default).

The model is pure: it owns no clock and no global randomness. Every step takes the
``random.Random`` to draw from, so a seed makes a whole fleet repeat exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: Names the simulator gives its virtual riders (at most 8 characters, as the schema allows).
RIDER_NAMES = (
    "Ada", "Bea", "Cal", "Dev", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu", "Mo",
    "Ned", "Oli", "Pam", "Quin", "Rae", "Sam", "Tia", "Uma", "Vic", "Wes", "Xan", "Yas", "Zed",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class RideBounds:
    """The range a sensor can report."""

    cadence_min: float = 30.0
    cadence_max: float = 90.0
    resistance_min: float = 33.0
    resistance_max: float = 86.0

    def __post_init__(self) -> None:
        if not 0 <= self.cadence_min < self.cadence_max:
            raise ValueError("cadence bounds must satisfy 0 <= min < max")
        if not 0 <= self.resistance_min < self.resistance_max:
            raise ValueError("resistance bounds must satisfy 0 <= min < max")


DEFAULT_BOUNDS = RideBounds()


@dataclass(frozen=True, slots=True, kw_only=True)
class RiderProfile:
    """What makes one rider different from another."""

    ability: float
    """0..1: where in the bounds this rider's sustainable effort sits."""
    endurance: float
    """0..1: how slowly the rider tires."""
    noise_rpm: float = 1.5
    """Standard deviation of the cadence sensor's noise."""

    @classmethod
    def draw(cls, rng: random.Random) -> RiderProfile:
        """A random rider: most are average, a few are very strong or weak."""
        ability = min(1.0, max(0.0, rng.gauss(0.55, 0.18)))
        endurance = min(1.0, max(0.0, rng.gauss(0.6, 0.2)))
        return cls(ability=ability, endurance=endurance)


@dataclass(slots=True)
class RiderModel:
    """The state of one rider's legs, advanced one second at a time by :meth:`step`.

    Readings have one decimal, as bike consoles show them; :meth:`step_tenths` returns them as
    whole tenths (``723`` for 72.3 rpm), which the simulator formats without float arithmetic.
    It is the simulator's hot path (hundreds of thousands of calls a second), so what changes
    only when the rider picks a new effort is worked out then, in :meth:`_plan_effort`.
    """

    profile: RiderProfile
    bounds: RideBounds = DEFAULT_BOUNDS
    warmup_seconds: int = 45
    elapsed: int = 0
    """Seconds ridden in the current race."""
    fatigue: float = 0.0
    """0..1: accumulated tiredness; efforts raise it, recoveries lower it a little."""
    effort: float = 0.0
    """The current surge above (positive) or below (negative) steady effort, -1..1."""
    effort_left: int = 0
    """Seconds until the rider decides on the next effort."""
    resistance_level: float = field(default=-1.0)
    """The knob position, 0..1 of the resistance range (drawn on the first step)."""
    _drive: float = field(default=0.0, init=False, repr=False)
    _tiring: float = field(default=0.0, init=False, repr=False)
    _resistance: int = field(default=0, init=False, repr=False)
    """The resistance reading, in tenths."""
    _noise: float = field(default=0.0, init=False, repr=False)
    """Scale of the cadence noise, in tenths of an rpm."""
    _cadence_min: float = field(default=0.0, init=False, repr=False)
    _cadence_max: float = field(default=0.0, init=False, repr=False)
    """The cadence bounds, in tenths of an rpm."""

    def __post_init__(self) -> None:
        self._cadence_min = self.bounds.cadence_min * 10
        self._cadence_max = self.bounds.cadence_max * 10

    def start_race(self) -> None:
        """Reset what a new race resets: the warm-up and the effort plan, not the fatigue."""
        self.elapsed = 0
        self.effort = 0.0
        self.effort_left = 0
        self.fatigue *= 0.3

    def step(self, rng: random.Random) -> tuple[float, float]:
        """Advance one second and return the sensor's (cadence rpm, resistance) reading."""
        cadence, resistance = self.step_tenths(rng)
        return cadence / 10, resistance / 10

    def step_tenths(self, rng: random.Random) -> tuple[int, int]:
        """Advance one second and return (cadence, resistance) in tenths: (723, 551)."""
        if self.effort_left <= 0:
            self._plan_effort(rng)
        self.effort_left -= 1
        elapsed = self.elapsed = self.elapsed + 1
        fatigue = self.fatigue + self._tiring
        self.fatigue = fatigue = 1.0 if fatigue > 1.0 else 0.0 if fatigue < 0.0 else fatigue
        drive = self._drive - 0.25 * fatigue
        if elapsed < self.warmup_seconds:
            drive *= 0.55 + 0.45 * elapsed / self.warmup_seconds
        low, high = self._cadence_min, self._cadence_max
        # Sensor noise: the sum of two uniforms, cheap and close enough to a normal.
        cadence = low + (high - low) * drive + (rng.random() + rng.random() - 1.0) * self._noise
        cadence = high if cadence > high else low if cadence < low else cadence
        return int(cadence + 0.5), self._resistance

    def _plan_effort(self, rng: random.Random) -> None:
        """Pick the next effort: riders alternate hard efforts, recoveries and steady stretches."""
        profile = self.profile
        if self.resistance_level < 0:
            self.resistance_level = min(1.0, max(0.0, profile.ability + rng.gauss(0.0, 0.12)))
            self._noise = 10 * profile.noise_rpm / 0.408  # the std of the sum of two uniforms
        roll = rng.random()
        if roll < 0.25:
            self.effort = 0.35 + 0.4 * rng.random()
            self.effort_left = 10 + int(20 * rng.random())
        elif roll < 0.5:
            self.effort = -0.15 - 0.2 * rng.random()
            self.effort_left = 8 + int(15 * rng.random())
        else:
            self.effort = 0.0
            self.effort_left = 15 + int(30 * rng.random())
        if rng.random() < 0.3:
            # Turn the knob now and then, more often up during an effort.
            delta = 0.08 * (rng.random() - 0.5 + self.effort)
            self.resistance_level = min(1.0, max(0.0, self.resistance_level + delta))
        effort = self.effort
        # Strong riders on an effort come near the top of the range, rarely past it.
        self._drive = 0.25 + 0.45 * profile.ability + 0.25 * effort
        self._tiring = (1.0 - profile.endurance) * 0.004 * max(effort, 0.0) + 0.0004
        if effort < 0:
            self._tiring -= 0.001
        bounds = self.bounds
        r_span = bounds.resistance_max - bounds.resistance_min
        self._resistance = int(10 * (bounds.resistance_min + r_span * self.resistance_level) + 0.5)
