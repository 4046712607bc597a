"""Parsing the backend's results message into the rider's place."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alleycat_rider.core.standings import ResultsError, standings_for


def results(outputs: object, *, class_id: object = "1", encode: bool = True) -> bytes:
    body = json.dumps(outputs) if encode else outputs
    message = {
        "msg": "results",
        "classId": class_id,
        "raceId": "race-5880622",
        "ts": "1764186600000",
        "results": body,
    }
    return json.dumps(message).encode()


def test_the_rider_is_placed_by_output() -> None:
    payload = results({"100": 151.2, "101": 160.0, "102": 120.5})
    standings = standings_for(payload, racer_id=100, class_id=1)
    assert standings is not None
    assert standings.place == 2
    assert standings.riders == 3
    assert standings.output == 151.2
    assert standings.leader_output == 160.0
    assert standings.race_id == "race-5880622"
    assert standings.timestamp_ms == 1764186600000


def test_equal_outputs_share_a_place() -> None:
    payload = results({"100": 150, "101": 150, "102": 170})
    standings = standings_for(payload, racer_id=101, class_id=1)
    assert standings is not None and standings.place == 2


def test_a_rider_without_a_result_has_no_place() -> None:
    standings = standings_for(results({"101": 150}), racer_id=100, class_id=1)
    assert standings is not None
    assert standings.place is None
    assert standings.riders == 1


def test_results_of_another_class_are_not_ours() -> None:
    assert standings_for(results({"100": 150}, class_id="2"), racer_id=100, class_id=1) is None


def test_results_given_as_an_object_rather_than_a_string_are_accepted() -> None:
    payload = results({"100": 150}, class_id=1, encode=False)
    standings = standings_for(payload, racer_id=100, class_id=1)
    assert standings is not None and standings.place == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"msg": "hello"}',
        results({"100": "fast"}),
        results({"100": 1}, class_id="one"),
        results({"100": 1}, class_id=True),
        json.dumps({"msg": "results", "classId": "1", "ts": "1", "results": "{}"}).encode(),
        json.dumps(
            {"msg": "results", "classId": "1", "raceId": "r", "ts": "1", "results": "{oops"}
        ).encode(),
        json.dumps(
            {"msg": "results", "classId": "1", "raceId": "r", "ts": "1", "results": "[1]"}
        ).encode(),
        b'{"msg": "results", "classId": "1", "raceId": "r", "ts": "1", "results": {"1": NaN}}',
        b"\xff\xfe",
    ],
)
def test_malformed_results_are_refused(payload: bytes) -> None:
    with pytest.raises(ResultsError):
        standings_for(payload, racer_id=100, class_id=1)


@given(
    outputs=st.dictionaries(
        st.integers(min_value=0, max_value=10_000),
        st.floats(min_value=0, max_value=1000, allow_nan=False),
        min_size=1,
        max_size=50,
    ),
    data=st.data(),
)
def test_the_place_is_one_more_than_the_riders_ahead(
    outputs: dict[int, float], data: st.DataObject
) -> None:
    racer = data.draw(st.sampled_from(sorted(outputs)))
    payload = results({str(racer_id): value for racer_id, value in outputs.items()})
    standings = standings_for(payload, racer_id=racer, class_id=1)
    assert standings is not None
    assert standings.place == 1 + sum(1 for value in outputs.values() if value > outputs[racer])
    assert standings.riders == len(outputs)
    assert standings.leader_output == max(outputs.values())
