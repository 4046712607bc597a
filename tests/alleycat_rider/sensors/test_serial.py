"""Serial sensors through a real pseudo-terminal pair, with a fake bike on the master end."""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import serial

from alleycat_rider.errors import SensorError
from alleycat_rider.sensors import Reading, SensorOptions, open_sensor
from alleycat_rider.sensors.frames import FrameError
from alleycat_rider.sensors.peloton import PelotonSensor, map_resistance
from alleycat_rider.sensors.serial_frames import (
    PelotonCode,
    parse_peloton_request,
    peloton_response,
)
from alleycat_rider.sensors.serial_line import SerialLineSensor
from alleycat_rider.sensors.serial_port import serial_error_message
from tests.alleycat_rider.sensors.helpers import wait_until

NOW = 100.0


def fixed_clock() -> float:
    return NOW


@dataclass
class Pty:
    """One pseudo-terminal: the sensor opens ``path``; the fake bike uses ``master``."""

    master: int
    slave: int
    path: str

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)


def open_pty() -> Pty:
    master, slave = os.openpty()
    # Raw from the start: a fresh pty echoes what the bike writes until pyserial opens it.
    tty.setraw(slave)
    return Pty(master, slave, os.ttyname(slave))


@pytest.fixture
def pty() -> Iterator[Pty]:
    pair = open_pty()
    yield pair
    pair.close()


@dataclass
class FakePeloton:
    """Answers the head unit's requests on the master end, as the bike would."""

    master: int
    cadence: int
    resistance: int
    noise_first: bytes = b""
    asked: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> FakePeloton:
        self._thread = threading.Thread(target=self._serve)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            buffer += os.read(self.master, 64)
            while len(buffer) >= 4:
                request, buffer = buffer[:4], buffer[4:]
                try:
                    code = parse_peloton_request(request)
                except FrameError:
                    buffer = request[1:] + buffer  # out of step: slide by one byte
                    continue
                self.asked.append(code)
                value = self.cadence if code == PelotonCode.CADENCE else self.resistance
                answer = self.noise_first + peloton_response(code, value)
                self.noise_first = b""
                os.write(self.master, answer)


# --- The line protocol ------------------------------------------------------------------------


def test_line_sensor_reads_what_the_bike_writes(pty: Pty) -> None:
    options = SensorOptions(kind="serial", device=pty.path)
    with SerialLineSensor(options, clock=fixed_clock) as sensor:
        # The first line is the tail of one the sensor joined mid-stream, and is dropped.
        os.write(pty.master, b"5,40\n72,40\n73.5, 41\r\n")
        wait_until(lambda: sensor.stats.frames == 2)

        assert sensor.read(NOW + 1) == Reading(73.5, 41.0, NOW)
        assert sensor.stats.malformed == 0
    assert not [t for t in threading.enumerate() if t.name == "alleycat-serial-sensor"]
    sensor.close()  # a second close does nothing


def test_line_sensor_counts_and_skips_garbage(pty: Pty) -> None:
    options = SensorOptions(kind="serial", device=pty.path)
    with SerialLineSensor(options, clock=fixed_clock) as sensor:
        os.write(pty.master, b"\n\xff\xfe\x00\nhello\n999,40\n" + b"z" * 300 + b"\n64,38\n")
        wait_until(lambda: sensor.stats.frames == 1)

        assert sensor.read(NOW) == Reading(64.0, 38.0, NOW)
        assert sensor.stats.malformed == 4


def test_line_sensor_reads_zero_cadence_when_the_bike_goes_quiet(pty: Pty) -> None:
    options = SensorOptions(kind="serial", device=pty.path, silence_timeout=3.0)
    with SerialLineSensor(options, clock=fixed_clock) as sensor:
        os.write(pty.master, b"\n80,50\n")
        wait_until(lambda: sensor.stats.frames == 1)

        assert sensor.read(NOW + 3.5) == Reading(0.0, 50.0, NOW)
        assert sensor.stats.dropouts == 1


def test_line_sensor_opened_with_calibration_reports_the_corrected_reading(pty: Pty) -> None:
    options = SensorOptions(
        kind="serial", device=pty.path, cadence_scale=0.5, resistance_scale=2, resistance_offset=-10
    )
    with open_sensor(options) as sensor:
        os.write(pty.master, b"\n80,50\n")
        wait_until(lambda: sensor.stats.frames == 1)

        reading = sensor.read(time.monotonic())
        assert (reading.cadence, reading.resistance) == (40.0, 90.0)


def test_line_sensor_reopens_the_port_when_the_bike_is_plugged_back_in(tmp_path: Path) -> None:
    # Like /dev/serial/by-id/...: a stable name that udev points at whichever tty the
    # adapter gets when it comes back.
    link = tmp_path / "bike"
    first = open_pty()
    link.symlink_to(first.path)
    options = SensorOptions(kind="serial", device=str(link), reconnect_min_delay=0.01)
    with SerialLineSensor(options, clock=fixed_clock) as sensor:
        os.write(first.master, b"\n70,40\n")
        wait_until(lambda: sensor.stats.frames == 1)

        first.close()
        second = open_pty()
        try:
            link.unlink()
            link.symlink_to(second.path)
            wait_until(lambda: sensor.stats.reconnects == 1)
            os.write(second.master, b"\n90,55\n")
            wait_until(lambda: sensor.stats.frames == 2)

            assert sensor.read(NOW) == Reading(90.0, 55.0, NOW)
        finally:
            sensor.close()
            second.close()


def test_missing_serial_device_says_what_to_do(tmp_path: Path) -> None:
    sensor = open_sensor(SensorOptions(kind="serial", device=str(tmp_path / "ttyUSB9")))

    with pytest.raises(SensorError, match="does not exist.*--device"):
        sensor.start()
    sensor.close()


def test_serial_device_we_may_not_open_says_how_to_get_permission(tmp_path: Path) -> None:
    device = tmp_path / "ttyS9"
    device.touch(mode=0o000)

    def attempt() -> str:
        sensor = open_sensor(SensorOptions(kind="serial", device=str(device)))
        try:
            sensor.start()
        except SensorError as exc:
            return str(exc)
        finally:
            sensor.close()
        return "opened"

    message = attempt() if os.geteuid() != 0 else _as_nobody(attempt)
    assert "dialout" in message


def _as_nobody(attempt: Callable[[], str]) -> str:
    """Run ``attempt`` in a forked child that has given up root (which may open anything)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = attempt()
        except BaseException as exc:
            result = f"child failed: {exc!r}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    return result


# --- Peloton ----------------------------------------------------------------------------------


def test_peloton_sensor_asks_for_cadence_and_resistance(pty: Pty) -> None:
    options = SensorOptions(kind="peloton", device=pty.path)
    with (
        PelotonSensor(options, clock=fixed_clock) as sensor,
        FakePeloton(pty.master, cadence=87, resistance=512) as bike,
    ):
        wait_until(lambda: sensor.stats.frames >= 2)

        assert sensor.read(NOW) == Reading(87.0, 512.0, NOW)
        assert {PelotonCode.CADENCE, PelotonCode.RESISTANCE} <= set(bike.asked)


def test_peloton_sensor_maps_raw_resistance_through_the_calibration(pty: Pty) -> None:
    table = ((0.0, 0.0), (1000.0, 100.0))
    options = SensorOptions(kind="peloton", device=pty.path, peloton_resistance_map=table)
    with (
        PelotonSensor(options, clock=fixed_clock) as sensor,
        FakePeloton(pty.master, cadence=60, resistance=455),
    ):
        wait_until(lambda: sensor.stats.frames >= 2)

        assert sensor.read(NOW).resistance == pytest.approx(45.5)


def test_peloton_sensor_skips_line_noise_and_keeps_reading(pty: Pty) -> None:
    options = SensorOptions(kind="peloton", device=pty.path)
    noise = b"\x00\xf1\x41\x02\x37\x38\x00\xf6"  # a cadence response with a bad checksum
    with (
        PelotonSensor(options, clock=fixed_clock) as sensor,
        FakePeloton(pty.master, cadence=75, resistance=300, noise_first=noise),
    ):
        wait_until(lambda: sensor.stats.frames >= 2)

        assert sensor.read(NOW) == Reading(75.0, 300.0, NOW)
        assert sensor.stats.malformed >= 2


def test_resistance_map_interpolates_and_holds_at_the_ends() -> None:
    table = ((200.0, 10.0), (600.0, 50.0), (1000.0, 100.0))

    assert map_resistance(400.0, table) == 30.0
    assert map_resistance(800.0, table) == 75.0
    assert map_resistance(100.0, table) == 10.0
    assert map_resistance(2000.0, table) == 100.0
    assert map_resistance(321.0, ()) == 321.0


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOENT, "does not exist"),
        (errno.EACCES, "sudo usermod -aG dialout"),
        (errno.EBUSY, "close the other program"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_serial_open_errors_become_advice(code: int, advice: str) -> None:
    exc = serial.SerialException(code, f"could not open port /dev/ttyUSB0: {os.strerror(code)}")

    assert advice in serial_error_message("/dev/ttyUSB0", exc)


def test_peloton_calibration_from_the_config_file_reaches_the_sensor(
    pty: Pty, tmp_path: Path
) -> None:
    from alleycat_rider.cli import sensor_options
    from alleycat_rider.config import load_config

    config_file = tmp_path / "rider.toml"
    config_file.write_text(
        f'endpoint = "localhost"\nracer_id = 1\nsensor = "peloton"\ndevice = "{pty.path}"\n'
        "peloton_resistance_map = [[200, 0], [600, 40], [1000, 100]]\n"
    )
    sensor = open_sensor(sensor_options(load_config({}, {}, config_file)))
    with sensor, FakePeloton(pty.master, cadence=80, resistance=800):
        wait_until(lambda: sensor.stats.frames >= 2)

        assert sensor.read(time.monotonic()).resistance == pytest.approx(70.0)
