"""Standings from the backend's results message: where this rider is placed.

The backend publishes, on ``alleycat-subscribe``::

    {"msg": "results", "classId": "1", "raceId": "race-5880622", "ts": "1764186600000",
     "results": "{\\"100\\": 151.2, \\"101\\": 140.9}"}

``results`` is itself a JSON string mapping racer ids to their output (the maximum output of the
race so far). A rider's place is one more than the number of riders with a higher output.
Parsing is pure: bytes in, :class:`Standings` (or :class:`ResultsError`) out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


class ResultsError(ValueError):
    """A message on the results topic that is not a results message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Standings:
    """The rider's standing in one race of their class."""

    race_id: str
    """The race as the backend names it, e.g. ``race-5880622``."""
    class_id: int
    timestamp_ms: int
    """When the backend computed the results (epoch milliseconds)."""
    riders: int
    """How many riders have a result."""
    place: int | None
    """1 for the leader; ``None`` if the rider has no result yet."""
    output: float | None
    """The rider's output as the backend counts it."""
    leader_output: float | None
    """The best output of the race; ``None`` if nobody has a result."""


def _integer(obj: dict[str, Any], field: str) -> int:
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ResultsError(f"{field} must be an integer or a string of one, not {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise ResultsError(f"{field} is not a number: {value!r}") from exc


def parse_results(payload: bytes | str) -> tuple[str, int, int, dict[str, float]]:
    """Decode a results message.

    Args:
        payload: The message as received.

    Returns:
        ``(race_id, class_id, timestamp_ms, outputs_by_racer_id)``.

    Raises:
        ResultsError: it is not JSON, not a results message, or a field is malformed.
    """
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResultsError(f"not JSON: {exc}") from exc
    except RecursionError:
        raise ResultsError("not a results message: JSON nested too deeply") from None
    if not isinstance(obj, dict) or obj.get("msg") != "results":
        raise ResultsError('not a results message (no "msg": "results")')
    race_id = obj.get("raceId")
    if not isinstance(race_id, str) or not race_id:
        raise ResultsError(f"raceId must be a string, not {race_id!r}")
    class_id = _integer(obj, "classId")
    timestamp_ms = _integer(obj, "ts")
    results = obj.get("results")
    if isinstance(results, str):
        try:
            results = json.loads(results)
        except ValueError as exc:
            raise ResultsError(f"results is not a JSON string: {exc}") from exc
        except RecursionError:
            raise ResultsError("results is nested too deeply") from None
    if not isinstance(results, dict):
        raise ResultsError("results must map racer ids to outputs")
    outputs: dict[str, float] = {}
    for racer, value in results.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ResultsError(f"the output of racer {racer} is not a number: {value!r:.40}")
        try:
            output = float(value)  # an integer of 10**309 or more has no float
        except OverflowError:
            raise ResultsError(f"the output of racer {racer} is too large") from None
        if not math.isfinite(output):
            raise ResultsError(f"the output of racer {racer} is not finite")
        outputs[str(racer).strip()] = output
    return race_id, class_id, timestamp_ms, outputs


def standings_for(payload: bytes | str, *, racer_id: int, class_id: int) -> Standings | None:
    """This rider's standing from a results message, or ``None`` if it is for another class.

    Raises:
        ResultsError: the message is malformed.
    """
    race_id, message_class, timestamp_ms, outputs = parse_results(payload)
    if message_class != class_id:
        return None
    mine = outputs.get(str(racer_id))
    place = None if mine is None else 1 + sum(1 for value in outputs.values() if value > mine)
    return Standings(
        race_id=race_id,
        class_id=message_class,
        timestamp_ms=timestamp_ms,
        riders=len(outputs),
        place=place,
        output=mine,
        leader_output=max(outputs.values(), default=None),
    )
