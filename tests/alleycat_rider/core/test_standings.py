"""Parsing the backend's results message into the rider's place."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alleycat_rider.core.standings import ResultsError, Standings, standings_for


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


def test_json_nested_too_deeply_is_a_results_error() -> None:
    deep = (
        b'{"msg": "results", "raceId": "race-1", "classId": 1, "ts": 1, "results": '
        + (b"[" * 100_000)
        + b"]" * 100_000
        + b"}"
    )
    with pytest.raises(ResultsError, match="nested too deeply"):
        standings_for(deep, racer_id=1, class_id=1)
    inner = json.dumps("[" * 100_000 + "]" * 100_000)
    nested_string = (
        '{"msg": "results", "raceId": "race-1", "classId": 1, "ts": 1, "results": ' + inner + "}"
    )
    with pytest.raises(ResultsError, match="nested too deeply"):
        standings_for(nested_string.encode(), racer_id=1, class_id=1)


def test_an_output_too_large_for_a_float_is_a_results_error() -> None:
    huge = (
        '{"msg":"results","raceId":"race-1","classId":1,"ts":1,"results":{"1":1' + "0" * 309 + "}}"
    )
    with pytest.raises(ResultsError, match="too large"):
        standings_for(huge.encode(), racer_id=1, class_id=1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_standings_or_a_results_error(payload: bytes) -> None:
    try:
        got = standings_for(payload, racer_id=1, class_id=1)
    except ResultsError:
        return
    assert got is None or isinstance(got, Standings)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "msg": st.just("results"),
            "raceId": _json | st.just("race-7"),
            "classId": _json | st.just("1"),
            "ts": _json | st.just(5),
            "results": _json | st.dictionaries(st.text(max_size=4), _json, max_size=4),
        },
    )  # fmt: skip
)
def test_any_json_gives_standings_or_a_results_error(message: dict[str, object]) -> None:
    try:
        got = standings_for(json.dumps(message), racer_id=1, class_id=1)
    except ResultsError:
        return
    assert got is None or isinstance(got, Standings)
