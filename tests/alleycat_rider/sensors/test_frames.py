"""The pure frame parsers, fed the real packets from the reference and arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alleycat_rider.sensors.frames import (
    CrankCadence,
    CscMeasurement,
    FrameError,
    IndoorBikeData,
    encode_csc_measurement,
    encode_indoor_bike_data,
    parse_csc_measurement,
    parse_indoor_bike_data,
)
from alleycat_rider.sensors.serial_frames import (
    MAX_LINE_LENGTH,
    LineSplitter,
    PelotonCode,
    PelotonResponse,
    PelotonSplitter,
    encode_reading_line,
    parse_peloton_request,
    parse_peloton_response,
    parse_reading_line,
    peloton_request,
    peloton_response,
)

ZWIFT_HUB = bytes.fromhex("FE 02 71 07 17 07 7A 00 7A 00 05 00 00 14 00 61 00 61 00 00")
JETBLACK = bytes.fromhex("64 02 00 00 00 00 14 00 00 00 00")


# --- FTMS Indoor Bike Data --------------------------------------------------------------------


def test_zwift_hub_packet_reads_as_the_bike_reported_it() -> None:
    record = parse_indoor_bike_data(ZWIFT_HUB)

    assert record == IndoorBikeData(
        speed_kmh=19.05,
        average_speed_kmh=18.15,
        cadence_rpm=61.0,
        average_cadence_rpm=61.0,
        distance_m=5,
        resistance=20.0,
        power_w=97,
        average_power_w=97,
        heart_rate_bpm=0,
    )


def test_jetblack_packet_reads_resistance_20_at_standstill() -> None:
    record = parse_indoor_bike_data(JETBLACK)

    assert (record.cadence_rpm, record.resistance, record.power_w) == (0.0, 20.0, 0)
    assert record.speed_kmh == 0.0
    assert record.heart_rate_bpm == 0


def test_real_packets_encode_back_to_the_same_bytes() -> None:
    assert encode_indoor_bike_data(parse_indoor_bike_data(ZWIFT_HUB)) == ZWIFT_HUB
    assert encode_indoor_bike_data(parse_indoor_bike_data(JETBLACK)) == JETBLACK


def test_speed_is_absent_when_more_data_bit_is_set() -> None:
    # Bit 0 set, bit 2 set: cadence only, 90 rpm.
    record = parse_indoor_bike_data(bytes.fromhex("05 00 B4 00"))

    assert record.more_data
    assert record.speed_kmh is None
    assert record.cadence_rpm == 90.0


def test_every_flag_decodes_its_field_in_order() -> None:
    record = IndoorBikeData(
        speed_kmh=30.5,
        average_speed_kmh=28.25,
        cadence_rpm=85.5,
        average_cadence_rpm=80.0,
        distance_m=12345,
        resistance=-3.0,
        power_w=250,
        average_power_w=-1,
        total_energy_kcal=120,
        energy_per_hour_kcal=600,
        energy_per_minute_kcal=10,
        heart_rate_bpm=150,
        metabolic_equivalent=7.2,
        elapsed_time_s=900,
        remaining_time_s=300,
    )
    frame = encode_indoor_bike_data(record)

    assert frame[:2] == (0x1FFE).to_bytes(2, "little")
    assert len(frame) == 2 + 2 + 2 + 2 + 2 + 3 + 2 + 2 + 2 + 5 + 1 + 1 + 2 + 2
    assert parse_indoor_bike_data(frame) == record


def test_unavailable_energy_reads_as_none() -> None:
    # Flags: bit 8 only (speed present); energy all "not available".
    frame = bytes.fromhex("00 01 00 00 FF FF FF FF FF")

    record = parse_indoor_bike_data(frame)

    assert record.total_energy_kcal is None
    assert record.energy_per_hour_kcal is None
    assert record.energy_per_minute_kcal is None


def test_life_fitness_flag_set_parses_when_fields_are_present() -> None:
    # 0x09FA: bits 1, 3..8, 11 with bit 0 clear, as Life Fitness bikes send.
    record = IndoorBikeData(
        speed_kmh=20.0,
        average_speed_kmh=19.0,
        average_cadence_rpm=70.0,
        distance_m=100,
        resistance=12.0,
        power_w=150,
        average_power_w=140,
        total_energy_kcal=30,
        energy_per_hour_kcal=500,
        energy_per_minute_kcal=8,
        elapsed_time_s=60,
    )
    frame = encode_indoor_bike_data(record)

    assert frame[:2] == bytes.fromhex("FA 09")
    assert parse_indoor_bike_data(frame) == record


def test_a_split_record_merges_into_one() -> None:
    first = parse_indoor_bike_data(bytes.fromhex("25 00 B4 00 28 00"))  # more data: cadence, res
    last = parse_indoor_bike_data(bytes.fromhex("40 00 D0 07 C8 00"))  # speed, power

    record = IndoorBikeData().merge(first).merge(last)

    assert (record.cadence_rpm, record.resistance) == (90.0, 40.0)
    assert (record.speed_kmh, record.power_w) == (20.0, 200)
    assert not record.more_data


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x02", ZWIFT_HUB[:-1], bytes.fromhex("04 00 B4"), bytes.fromhex("00 00 01")],
    ids=["empty", "half-flags", "zwift-cut", "cadence-cut", "speed-cut"],
)
def test_short_ftms_frames_are_malformed(frame: bytes) -> None:
    with pytest.raises(FrameError):
        parse_indoor_bike_data(frame)


@given(st.binary(max_size=40))
def test_ftms_parser_raises_only_frame_error(data: bytes) -> None:
    try:
        record = parse_indoor_bike_data(data)
    except FrameError:
        return
    assert parse_indoor_bike_data(encode_indoor_bike_data(record)) == record


def _optional(strategy: st.SearchStrategy[int | float]) -> st.SearchStrategy[int | float | None]:
    return st.none() | strategy


@st.composite
def indoor_bike_records(draw: st.DrawFn) -> IndoorBikeData:
    more_data = draw(st.booleans())
    energy = draw(st.booleans())
    return IndoorBikeData(
        more_data=more_data,
        speed_kmh=None if more_data else draw(st.integers(0, 0xFFFF)) / 100,
        average_speed_kmh=draw(_optional(st.integers(0, 0xFFFF).map(lambda v: v / 100))),
        cadence_rpm=draw(_optional(st.integers(0, 0xFFFF).map(lambda v: v / 2))),
        average_cadence_rpm=draw(_optional(st.integers(0, 0xFFFF).map(lambda v: v / 2))),
        distance_m=draw(st.none() | st.integers(0, 0xFFFFFF)),
        resistance=draw(_optional(st.integers(-0x8000, 0x7FFF).map(float))),
        power_w=draw(st.none() | st.integers(-0x8000, 0x7FFF)),
        average_power_w=draw(st.none() | st.integers(-0x8000, 0x7FFF)),
        total_energy_kcal=draw(st.integers(0, 0xFFFE)) if energy else None,
        energy_per_hour_kcal=draw(st.none() | st.integers(0, 0xFFFE)) if energy else None,
        energy_per_minute_kcal=draw(st.none() | st.integers(0, 0xFE)) if energy else None,
        heart_rate_bpm=draw(st.none() | st.integers(0, 0xFF)),
        metabolic_equivalent=draw(_optional(st.integers(0, 0xFF).map(lambda v: v / 10))),
        elapsed_time_s=draw(st.none() | st.integers(0, 0xFFFF)),
        remaining_time_s=draw(st.none() | st.integers(0, 0xFFFF)),
    )


@given(indoor_bike_records())
def test_any_indoor_bike_record_round_trips(record: IndoorBikeData) -> None:
    assert parse_indoor_bike_data(encode_indoor_bike_data(record)) == record


# --- CSC --------------------------------------------------------------------------------------


def test_csc_crank_and_wheel_data_parse() -> None:
    frame = bytes.fromhex("03 10 27 00 00 00 04 2A 00 00 08")

    assert parse_csc_measurement(frame) == CscMeasurement(
        wheel_revolutions=10000,
        wheel_event_time=0x0400,
        crank_revolutions=42,
        crank_event_time=0x0800,
    )


@pytest.mark.parametrize("frame", [b"", b"\x02\x01\x00\x00", b"\x01\x00\x00\x00\x00\x00"])
def test_short_csc_frames_are_malformed(frame: bytes) -> None:
    with pytest.raises(FrameError):
        parse_csc_measurement(frame)


@given(st.binary(max_size=20))
def test_csc_parser_raises_only_frame_error(data: bytes) -> None:
    try:
        measurement = parse_csc_measurement(data)
    except FrameError:
        return
    assert parse_csc_measurement(encode_csc_measurement(measurement)) == measurement


def test_crank_cadence_from_one_revolution_a_second_is_60_rpm() -> None:
    crank = CrankCadence()

    assert crank.update(100, 0, now=0.0) == 0.0  # nothing to compare with yet
    assert crank.update(101, 1024, now=1.0) == 60.0
    assert crank.update(103, 2048 + 1024, now=2.0) == 60.0


def test_crank_cadence_survives_both_counters_wrapping() -> None:
    crank = CrankCadence()
    crank.update(65535, 65000, now=0.0)

    # Two revolutions in one second (1024 ticks), both counters passing 65535.
    assert crank.update(1, (65000 + 1024) & 0xFFFF, now=1.0) == 120.0


def test_repeated_event_time_holds_cadence_then_drops_to_zero() -> None:
    crank = CrankCadence(stale_after=2.0)
    crank.update(10, 1000, now=0.0)
    crank.update(11, 2024, now=1.0)

    assert crank.update(11, 2024, now=2.0) == 60.0
    assert crank.update(11, 2024, now=3.0) == 0.0


def test_absurd_crank_cadence_is_rejected_and_the_next_reading_is_sane() -> None:
    crank = CrankCadence()
    crank.update(0, 0, now=0.0)
    crank.update(1, 1024, now=1.0)

    with pytest.raises(FrameError):
        crank.update(100, 2048, now=2.0)  # 99 revolutions in a second
    assert crank.update(101, 3072, now=3.0) == 60.0


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.floats(0.0, 5.0)),
        max_size=20,
    )
)
def test_crank_cadence_is_never_negative_or_absurd(events: list[tuple[int, int, float]]) -> None:
    crank = CrankCadence()
    now = 0.0
    for revolutions, event_time, gap in events:
        now += gap
        try:
            rpm = crank.update(revolutions, event_time, now)
        except FrameError:
            continue
        assert 0.0 <= rpm < 256.0


# --- Peloton ----------------------------------------------------------------------------------


def test_peloton_requests_match_the_documented_bytes() -> None:
    assert peloton_request(PelotonCode.CADENCE) == bytes.fromhex("F5 41 36 F6")
    assert peloton_request(PelotonCode.POWER) == bytes.fromhex("F5 44 39 F6")
    assert peloton_request(PelotonCode.RESISTANCE) == bytes.fromhex("F5 4A 3F F6")


def test_peloton_response_digits_are_least_significant_first() -> None:
    # 87 rpm: digits "7", "8"; checksum F1+41+02+37+38 = 0x1A3 -> A3.
    frame = bytes.fromhex("F1 41 02 37 38 A3 F6")

    assert parse_peloton_response(frame) == PelotonResponse(PelotonCode.CADENCE, 87)
    assert peloton_response(PelotonCode.CADENCE, 87) == frame


def test_peloton_response_with_bad_checksum_is_malformed() -> None:
    with pytest.raises(FrameError, match="checksum"):
        parse_peloton_response(bytes.fromhex("F1 41 02 37 38 A4 F6"))


@given(st.binary(max_size=16))
def test_peloton_parsers_raise_only_frame_error(data: bytes) -> None:
    for parse in (parse_peloton_response, parse_peloton_request):
        try:
            parse(data)
        except FrameError:
            pass


@given(st.sampled_from(list(PelotonCode)), st.integers(0, 10**8 - 1))
def test_peloton_response_round_trips(code: PelotonCode, value: int) -> None:
    assert parse_peloton_response(peloton_response(code, value)) == PelotonResponse(code, value)


@given(st.sampled_from(list(PelotonCode)))
def test_peloton_request_round_trips(code: PelotonCode) -> None:
    assert parse_peloton_request(peloton_request(code)) == code


def test_splitter_finds_responses_among_noise_and_partial_reads() -> None:
    cadence = peloton_response(PelotonCode.CADENCE, 72)
    resistance = peloton_response(PelotonCode.RESISTANCE, 480)
    stream = b"\x00\x13" + cadence + resistance
    splitter = PelotonSplitter()

    chunks = [chunk for i in range(0, len(stream), 3) for chunk in splitter.feed(stream[i : i + 3])]

    parsed: list[PelotonResponse | None] = []
    for chunk in chunks:
        try:
            parsed.append(parse_peloton_response(chunk))
        except FrameError:
            parsed.append(None)
    assert parsed == [None, PelotonResponse(0x41, 72), PelotonResponse(0x4A, 480)]


@given(st.lists(st.binary(max_size=12), max_size=8))
def test_splitter_loses_no_bytes(pieces: list[bytes]) -> None:
    splitter = PelotonSplitter()

    chunks = [chunk for piece in pieces for chunk in splitter.feed(piece)]

    assert b"".join(chunks) + splitter.pending() == b"".join(pieces)


# --- The line protocol ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"72,40", (72.0, 40.0)),
        (b"61.5, 52.25\r", (61.5, 52.25)),
        (b"  0,-3 ", (0.0, -3.0)),
    ],
)
def test_reading_lines_parse(line: bytes, expected: tuple[float, float]) -> None:
    assert parse_reading_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [b"72", b"72,40,1", b"abc,40", b"-5,40", b"nan,40", b"300,40", b"72;40", b"1" * 70 + b",1"],
)
def test_malformed_reading_lines_are_rejected(line: bytes) -> None:
    with pytest.raises(FrameError):
        parse_reading_line(line)


@given(st.binary(max_size=80))
def test_line_parser_raises_only_frame_error(data: bytes) -> None:
    try:
        cadence, _ = parse_reading_line(data)
    except FrameError:
        return
    assert 0.0 <= cadence < 256.0


@given(
    st.integers(0, 2559).map(lambda tenths: tenths / 10),
    st.integers(-1000, 1000).map(lambda tenths: tenths / 10),
)
def test_reading_line_round_trips(cadence: float, resistance: float) -> None:
    assert parse_reading_line(encode_reading_line(cadence, resistance)[:-1]) == (
        cadence,
        resistance,
    )


def test_line_splitter_joins_partial_reads_and_skips_blank_lines() -> None:
    splitter = LineSplitter()

    assert splitter.feed(b"72,4") == []
    assert splitter.feed(b"0\r\n\r\n73,41\n74") == [b"72,40\r", b"73,41"]


def test_line_splitter_skips_the_partial_first_line_after_opening() -> None:
    splitter = LineSplitter(skip_first=True)

    assert splitter.feed(b".5,40\n72,40\n") == [b"72,40"]


def test_endless_line_is_cut_once_and_its_tail_dropped() -> None:
    splitter = LineSplitter()

    lines = splitter.feed(b"x" * 200) + splitter.feed(b"y" * 200) + splitter.feed(b"\n72,40\n")

    assert lines == [b"x" * (MAX_LINE_LENGTH + 1), b"72,40"]
    with pytest.raises(FrameError):
        parse_reading_line(lines[0])
