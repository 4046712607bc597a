"""Numbers a user gives: finite and within bounds, one check whichever way they arrive.

A setting's :class:`Bounds` is written once. The agent's config applies it to a value from the
config file, the environment or a flag alike; :meth:`Bounds.click_type` turns it into the
option's click type, so a flag fails as a usage error before anything starts. ``nan`` and
``inf`` are refused everywhere: a NaN compares false with every bound, so without this check
``--record-ttl nan`` would pass ``> 0`` and turn the TTL off.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What a numeric setting accepts: a finite number within these bounds."""

    minimum: float | None = None
    """The lowest value allowed; ``None`` for no lower bound."""
    maximum: float | None = None
    """The highest value allowed; ``None`` for no upper bound."""
    min_open: bool = False
    """Whether the minimum itself is refused (``> minimum`` rather than ``>= minimum``)."""
    integer: bool = False
    """Whether only whole numbers are allowed."""

    def describe(self) -> str:
        """What is allowed, as in ``"a finite number > 0"``."""
        noun = "a whole number" if self.integer else "a finite number"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not self.min_open:
            return f"{noun} from {_text(low)} to {_text(high)}"
        parts = [noun]
        if low is not None:
            parts.append(f"{'>' if self.min_open else '>='} {_text(low)}")
        if high is not None:
            parts.append(f"{'and ' if low is not None else ''}<= {_text(high)}")
        return " ".join(parts)

    def check(self, value: object) -> float:
        """``value`` as a number within bounds (an int for whole numbers).

        Args:
            value: A number, or its text (from the environment or a flag).

        Raises:
            ValueError: not a number, not finite, not whole when it must be, or out of bounds.
        """
        number = self._number(value)
        low, high = self.minimum, self.maximum
        if (
            not math.isfinite(number)
            or (low is not None and (number <= low if self.min_open else number < low))
            or (high is not None and number > high)
        ):
            # A number out of bounds, however it came: 0, not '0'.
            shown = value.strip() if isinstance(value, str) else repr(value)
            raise ValueError(f"must be {self.describe()}, not {shown}")
        return number

    def click_type(self) -> BoundedInt | BoundedFloat:
        """The click type of an option taking this setting."""
        return BoundedInt(self) if self.integer else BoundedFloat(self)

    def _number(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"must be {self.describe()}, not {value!r}")
        try:
            if self.integer:
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError
                    return int(value)
                return int(value)
            return float(value)
        except (ValueError, OverflowError):
            raise ValueError(f"must be {self.describe()}, not {value!r}") from None


class BoundedFloat(click.FloatRange):
    """A click option type for a finite float within :class:`Bounds` (``nan``/``inf`` refused).

    Args:
        bounds: What the option accepts.
    """

    def __init__(self, bounds: Bounds) -> None:
        # FloatRange's own bounds only draw the range in --help; the check is bounds.check.
        super().__init__(bounds.minimum, bounds.maximum, min_open=bounds.min_open)
        self.bounds = bounds

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Check ``value`` with the bounds; a usage error saying what is allowed otherwise."""
        try:
            return self.bounds.check(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class BoundedInt(click.IntRange):
    """A click option type for a whole number within :class:`Bounds`.

    Its messages read like the rest (``must be a whole number >= 1, not 'x'``), not click's
    ``'x' is not a valid integer range``.

    Args:
        bounds: What the option accepts; ``integer`` is implied.
    """

    name = "integer"

    def __init__(self, bounds: Bounds) -> None:
        low, high = bounds.minimum, bounds.maximum
        super().__init__(
            None if low is None else int(low),
            None if high is None else int(high),
            min_open=bounds.min_open,
        )
        self.bounds = dataclasses.replace(bounds, integer=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Check ``value`` with the bounds; a usage error saying what is allowed otherwise."""
        try:
            return int(self.bounds.check(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def whole(minimum: int | None = None, maximum: int | None = None) -> BoundedInt:
    """The click type of a whole-number option: ``type=whole(1, 6)``, ``type=whole(1)``."""
    return BoundedInt(Bounds(minimum=minimum, maximum=maximum, integer=True))


def finite(
    minimum: float | None = None, maximum: float | None = None, *, min_open: bool = False
) -> BoundedFloat:
    """The click type of a finite float option: ``type=finite(0, min_open=True)`` for ``> 0``."""
    return BoundedFloat(Bounds(minimum=minimum, maximum=maximum, min_open=min_open))


def _text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
