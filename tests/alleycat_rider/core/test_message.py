import json
import random
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alleycat_rider.core.message import (
    FIELDS,
    MessageError,
    RideEvent,
    RideMessage,
    output,
    race_id,
    race_position,
    tenths_texts,
    uuid4,
    uuid4_batch,
)


def _message(**overrides):
    fields: dict[str, Any] = dict(
        uuid=uuid4(random.Random(1)),
        event=RideEvent.UPDATE,
        device_timestamp=1_764_186_600_123,
        second=7,
        race_id=race_id(1_764_186_600_000),
        name="Ada",
        racer_id=100,
        class_id=3,
        cadence=61.5,
        resistance=52.3,
    )
    fields.update(overrides)
    return RideMessage(**fields)


def test_message_json_has_the_original_fields_in_order_and_types():
    obj = json.loads(_message().to_json())
    assert tuple(obj) == FIELDS
    assert obj["event"] == "update"
    assert obj["raceId"] == 1_764_186_600_000 // 300_000
    assert isinstance(obj["deviceTimestamp"], int)
    assert obj["cadence"] == 61.5 and obj["resistance"] == 52.3


def test_message_round_trips_through_json():
    message = _message(name='q"\\é', event=RideEvent.FINAL)
    assert RideMessage.from_json(message.to_json()) == message


def test_output_is_the_original_formula():
    assert output(30, 33) == pytest.approx(63.7)
    assert output(90, 86) == pytest.approx(188.75)


@given(st.randoms(use_true_random=False))
def test_uuids_are_version_4(rng):
    value = uuid4(rng)
    assert value[14] == "4" and value[19] in "89ab" and len(value) == 36


def test_seeded_uuids_repeat_and_differ_between_draws():
    a, b = random.Random(7), random.Random(7)
    first = [uuid4(a) for _ in range(100)]
    assert first == [uuid4(b) for _ in range(100)]
    assert len(set(first)) == 100


@pytest.mark.parametrize("count", [1, 2, 15, 16, 37, 1000])
def test_a_batch_of_uuids_is_the_version_4_uuids_of_its_random_bytes(count):
    batch = uuid4_batch(random.Random(count), count)
    raw = random.Random(count).randbytes(16 * count)
    expected = [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, len(raw), 16)]
    assert batch == expected
    assert all(uuid.UUID(u).version == 4 and uuid.UUID(u).variant == uuid.RFC_4122 for u in batch)


def test_seeded_uuid_batches_repeat_and_never_collide():
    first = uuid4_batch(random.Random(3), 5000)
    assert first == uuid4_batch(random.Random(3), 5000)
    assert len(set(first)) == 5000


def test_tenths_read_as_the_json_of_the_one_decimal_number():
    texts = tenths_texts(3000)
    assert texts[723] == "72.3" and texts[0] == "0.0" and texts[5] == "0.5"
    assert all(text == repr(n / 10) == json.dumps(n / 10) for n, text in enumerate(texts))


@pytest.mark.parametrize(
    "mutation, complaint",
    [
        ({"uuid": "nope"}, "uuid"),
        ({"event": "start"}, "event"),
        ({"second": "3"}, "second"),
        ({"cadence": True}, "cadence"),
        ({"second": 0}, "second"),
    ],
)
def test_invalid_messages_are_rejected_with_the_field_named(mutation, complaint):
    obj = _message().to_dict() | mutation
    with pytest.raises(MessageError, match=complaint):
        RideMessage.from_dict(obj)


def test_missing_fields_are_named():
    obj = _message().to_dict()
    del obj["racerId"]
    with pytest.raises(MessageError, match="racerId"):
        RideMessage.from_dict(obj)


def test_races_follow_each_other_and_the_last_second_is_final():
    start = 1_764_186_600_000
    assert race_position(start, 0, 300).second == 1
    last = race_position(start, 299, 300)
    assert (last.second, last.event) == (300, RideEvent.FINAL)
    nxt = race_position(start, 300, 300)
    assert (nxt.second, nxt.event, nxt.race_id) == (1, RideEvent.UPDATE, race_id(start) + 1)
