"""A damaged spool gives back every ride message still whole in it; the spool's room is reserved.

Spools are made by the spool itself in a fresh Python, with real ride messages, left by SIGKILL
(the log holds them) or closed (the database file holds them), then damaged as disks damage
files. What must come back is judged from the bytes alone: every message whose exact payload is
still in the damaged files, and nothing else.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.agent import salvage, wal
from alleycat_rider.agent.spool import DEFAULT_SPOOL_RESERVE, Spool
from alleycat_rider.core.message import MessageEncoder, RideMessage, RiderIdentity, uuid4
from alleycat_rider.errors import SpoolError

COUNT = 300
DAMAGE = ["flipped byte mid-log", "random bytes over the log", "log cut in half",
          "database cut in half", "random bytes over the database"]  # fmt: skip

_MAKE = """
import random, sys, time
from pathlib import Path
from alleycat_rider.core.message import MessageEncoder, RiderIdentity, uuid4
from alleycat_rider.agent.spool import Spool
path, count, how, reserve = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(7)
encoder = MessageEncoder(RiderIdentity(racer_id=101, name="Ada", class_id=2))
spool = Spool(path, reserve=reserve)
for i in range(count):
    uuid = uuid4(rng)
    payload = encoder.encode(uuid=uuid, event="update", device_timestamp=1764186600000 + i * 1000,
                             second=i + 1, race_id=5880622, cadence=round(rng.uniform(60, 99), 1),
                             resistance=round(rng.uniform(20, 60), 1))
    spool.append(uuid, payload)
    sys.stdout.write(payload.decode() + "\\n")
if how == "close":
    spool.close()
print("done", flush=True)
time.sleep(60)
"""


def make_spool(path: Path, *, count: int = COUNT, close: bool, reserve: int) -> list[bytes]:
    """Spool ``count`` ride messages in a fresh Python, then close it or SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _MAKE, str(path), str(count), "close" if close else "kill",
         str(reserve)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    made = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line == b"done\n":
                break
            made.append(line.rstrip(b"\n"))
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert len(made) == count
    return made


def damage(path: Path, kind: str) -> None:
    """Damage a spool's files as ``kind`` says (frames counted in the log's current generation)."""
    log = path.with_name(path.name + "-wal")
    rng = random.Random(11)
    if kind == "database cut in half":
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2 + 100])
        return
    if kind == "random bytes over the database":
        database = bytearray(path.read_bytes())
        middle = len(database) // 2
        database[middle : middle + 3000] = rng.randbytes(3000)
        path.write_bytes(bytes(database))
        return
    data = bytearray(log.read_bytes())
    frames = len(wal.frames(bytes(data), page_size=1024))
    middle = 32 + (frames // 2) * (24 + 1024)
    if kind == "flipped byte mid-log":
        data[middle + 24 + 700] ^= 0x04
    elif kind == "random bytes over the log":
        data[middle + 300 : middle + 4300] = rng.randbytes(4000)
    elif kind == "log cut in half":
        del data[middle + 500 :]
    log.write_bytes(bytes(data))


def damaged_spool(directory: Path, kind: str) -> tuple[Path, list[bytes], set[bytes], int]:
    """A damaged spool: its path, the messages made, those whole in its bytes, those SQLite keeps.

    The database cases are made without a reserve, so that the messages fill the file from its
    start and cutting it keeps some of them.
    """
    path = directory / "spool.db"
    in_database = "database" in kind
    made = make_spool(path, close=in_database, reserve=0 if in_database else DEFAULT_SPOOL_RESERVE)
    damage(path, kind)
    files = b"".join(p.read_bytes() for p in (path, path.with_name("spool.db-wal")) if p.exists())
    whole = {payload for payload in made if payload in files}
    return path, made, whole, sqlite_keeps(path)


def sqlite_keeps(path: Path) -> int:
    """How many messages SQLite alone reads from the damaged files (on a copy): 0 if none."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / path.name
        for suffix in ("", "-wal"):
            if path.with_name(path.name + suffix).exists():
                shutil.copyfile(
                    path.with_name(path.name + suffix), Path(scratch) / (path.name + suffix)
                )
        try:
            db = sqlite3.connect(copy)
            try:
                found: int = db.execute("SELECT count(*) FROM messages").fetchone()[0]
                return found
            finally:
                db.close()
        except sqlite3.DatabaseError:
            return 0


@pytest.mark.parametrize("kind", DAMAGE)
def test_every_message_whole_in_a_damaged_spool_is_spooled_again_and_counted(
    tmp_path: Path, kind: str
) -> None:
    path, made, whole, kept = damaged_spool(tmp_path, kind)
    events: list[tuple[str, str, dict[str, Any]]] = []
    with Spool(path, report=lambda level, message, **f: events.append((level, message, f))) as s:
        pending = [m.payload for m in s.pending(limit=10 * COUNT)]
    assert set(pending) == whole  # every message whose bytes survive, and nothing else
    assert len(pending) == len(whole)  # once each
    assert all(RideMessage.from_json(p).to_json() == p for p in pending)
    order = [made.index(p) for p in pending]
    assert order == sorted(order)  # oldest first, as made
    if kind == "log cut in half":
        # A log cut short is a write torn by a crash, as far as anyone can tell: SQLite keeps
        # every commit before the cut, and the bytes after it are gone. Nothing to report.
        assert events == [] and kept == len(whole) < len(made)
        return
    [(level, message, fields)] = events
    assert level == "warning" and message.startswith(f"the spool {path} was damaged")
    assert fields["recovered"] == len(whole) - kept > 0
    assert f"{fields['recovered']:,} messages recovered" in message
    assert fields["unreadable"] <= len(made) - len(whole)
    assert (tmp_path / "spool.db.damaged-1").exists()
    with Spool(path, report=lambda level, message, **f: events.append((level, message, f))) as s:
        assert [m.payload for m in s.pending(limit=10 * COUNT)] == pending  # sound now
    assert len(events) == 1


def test_a_message_damaged_in_every_copy_is_lost_alone_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    made = make_spool(path, count=30, close=False, reserve=0)
    log = bytearray(path.with_name("spool.db-wal").read_bytes())
    # Message 15's uuid is garbled wherever it was written (its page is written once per append
    # while it fills): no copy reads whole, and the frames holding it fail their checksums.
    damaged, start = 0, log.find(made[15])
    while start != -1:
        log[start + 20] = ord("Z")
        damaged += 1
        start = log.find(made[15], start + 1)
    assert damaged >= 1
    path.with_name("spool.db-wal").write_bytes(bytes(log))
    kept = sqlite_keeps(path)
    events: list[dict[str, Any]] = []
    with Spool(path, report=lambda level, message, **f: events.append(f)) as spool:
        pending = [m.payload for m in spool.pending(limit=100)]
    assert pending == made[:15] + made[16:]
    [warning] = events
    assert warning["unreadable"] == 1
    assert kept <= 15 and warning["recovered"] == 29 - kept


def test_the_spool_reserves_its_room_on_disk_and_keeps_the_same_room_when_reopened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    log = path.with_name("spool.db-wal")
    sizes = []
    for _ in range(3):
        with Spool(path) as spool:
            reserved = spool.reserved
            db_size, log_size = path.stat().st_size, log.stat().st_size
            # Written, not sparse: the blocks are the file's.
            assert path.stat().st_blocks * 512 >= db_size
            assert log.stat().st_blocks * 512 >= log_size
            spool.append("u", b"x" * 280)
        sizes.append(path.stat().st_size)
    # An hour of messages: about 1,200 free pages in the database, a log of 1,000 frames.
    assert db_size >= 1200 * 1024 and log_size >= 1000 * (24 + 1024)
    assert reserved >= db_size
    assert sizes[2] == sizes[1]  # reopening does not grow the file again
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] >= 1200


def test_a_spool_may_reserve_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", reserve=0) as spool:
        assert spool.reserved == 0
    assert (tmp_path / "spool.db").stat().st_size < 64 * 1024


def test_a_small_spool_reserves_no_more_than_it_holds(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db", max_messages=10) as spool:
        assert 0 < spool.reserved < 100 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of a given size (``"4m"``), each unmounted at the end; skipped where
    mounting is not permitted."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        directory = tmp_path / f"disk-{len(mounted)}"
        directory.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (not root?): {done.stderr.strip()}")
        mounted.append(directory)
        return directory

    try:
        yield mount
    finally:
        for directory in mounted:
            subprocess.run(["umount", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to its last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_an_hour_of_messages_fits_the_reserve_on_a_disk_that_fills_up(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("8m")
    events: list[str] = []
    with Spool(disk / "spool.db", report=lambda level, message, **f: events.append(message)) as s:
        filler = fill(disk)
        assert os.statvfs(disk).f_bavail == 0
        for i in range(DEFAULT_SPOOL_RESERVE):
            s.append(f"u{i:04}", b"x" * 280, durable=i % 10 == 0)
        assert (s.depth, s.in_memory, s.unspooled, s.refusal) == (DEFAULT_SPOOL_RESERVE, 0, 0, None)
        assert events == []
        # The disk really is full: a little past the reserve, the spool is refused.
        extra = 0
        while s.refusal is None and extra < 1000:
            s.append(f"extra {extra}", b"x" * 280)
            extra += 1
        assert s.refusal == "the disk is full" and extra < DEFAULT_SPOOL_RESERVE // 4  # margin
        kept = s.depth - s.in_memory
    filler.unlink()
    with Spool(disk / "spool.db") as spool:
        assert spool.depth == kept >= DEFAULT_SPOOL_RESERVE


def test_a_disk_too_small_for_the_reserve_is_one_clear_error(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("1m")
    with pytest.raises(SpoolError) as raised:
        Spool(disk / "spool.db")
    message = str(raised.value)
    assert message.startswith(f"cannot use the spool {disk / 'spool.db'}")
    assert "the disk is full: free some space" in message and "\n" not in message


def test_two_versions_of_a_message_are_settled_by_a_verified_frame_or_not_sent() -> None:
    [(uuid, first), (other, second)] = [(RideMessage.from_json(p).uuid, p) for p in _two_messages()]
    garbled = first.replace(b'"cadence":', b'"cadence":1')  # still a valid message
    assert RideMessage.from_json(garbled).to_json() == garbled
    dug = salvage.Dug(untrusted={uuid: {first, garbled}, other: {second}})
    assert salvage.to_spool(dug, spooled=[]) == ([(other, second)], 1)  # unsure: lost, counted
    dug.trusted[uuid] = first
    found, lost = salvage.to_spool(dug, spooled=[other])
    assert (found, lost) == ([(uuid, first)], 0)


def _two_messages() -> list[bytes]:
    encoder = MessageEncoder(RiderIdentity(racer_id=1, name="Ada", class_id=2))
    rng = random.Random(3)
    return [
        encoder.encode(uuid4(rng), "update", 1764186600000 + i, i + 1, 5880622, 72.5, 30.0)
        for i in range(2)
    ]
