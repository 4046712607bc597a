"""Reading an SQLite write-ahead log the way SQLite replays it, to tell damage from a torn write.

When SQLite opens a database whose WAL holds frames, it replays them in order and stops at the
first frame whose salt or checksum is wrong: that frame and every frame after it are ignored, as
if never written, and the next write overwrites them. That is right for a frame torn by a crash
in mid-write, the last one; it silently drops committed data when the bad frame is damage (one
flipped byte) in the middle of the log. This module reads a log as SQLite would and also looks
past the point where replay stops: frames there that are whole (their checksum verifies, seeded
from the stored checksum of the frame before) and of the same log generation (the header's salt)
were committed after the damage and will be lost. See https://sqlite.org/fileformat2.html#walformat.

Pure: it reads bytes given to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: A WAL header: magic, version, page size, checkpoint sequence, two salts, two checksums.
WAL_HEADER_SIZE = 32
#: A frame header: page number, database size after a commit (else 0), two salts, two checksums.
FRAME_HEADER_SIZE = 24
_MAGIC_LITTLE_ENDIAN = 0x377F0682
_MAGIC_BIG_ENDIAN = 0x377F0683


@dataclass(frozen=True, slots=True)
class WalReplay:
    """What SQLite keeps of a write-ahead log, and what it would drop that was committed."""

    frames: int
    """Whole frames in the file."""
    replayed: int
    """Frames SQLite replays: up to the last commit before the first bad frame."""
    damaged_frame: int | None
    """The first frame SQLite stops at (0-based), or ``None`` if it replays every commit."""
    lost_commits: int
    """Commits SQLite drops on opening: those written whole after the damage (of this log's
    generation), and the damaged frame's own, whose end cannot be read."""

    @property
    def damaged(self) -> bool:
        """Whether opening the database would drop commits that were written whole."""
        return self.lost_commits > 0


@dataclass(frozen=True, slots=True)
class WalFrame:
    """One frame of a log: a page as a transaction wrote it, and whether it reads back whole."""

    index: int
    """Its place in the log, from 0."""
    page: bytes
    """The page's bytes as written (or as damaged)."""
    whole: bool
    """Its salt is this log generation's and its checksum verifies: these bytes are as written."""
    commit: bool
    """It ends a transaction (its header says so; not to be trusted unless ``whole``)."""


def frames(wal: bytes, *, page_size: int | None = None) -> list[WalFrame]:
    """The frames of ``wal``'s current generation, damaged or not, in order.

    A frame is checked against the checksum its writer chained from (the stored checksum of the
    frame before), so frames after a damaged one still verify. The generation ends with the last
    frame carrying its salt: frames after it are leftovers of an older generation (or damaged
    beyond recognition) and are not returned.
    """
    if len(wal) < WAL_HEADER_SIZE:
        return []
    magic, _version, header_page_size, _sequence = struct.unpack(">4I", wal[:16])
    big_endian = magic != _MAGIC_LITTLE_ENDIAN  # either a big-endian log or a damaged magic
    stored = struct.unpack(">2I", wal[24:32])
    header_valid = (
        magic in (_MAGIC_LITTLE_ENDIAN, _MAGIC_BIG_ENDIAN)
        and (page_size is None or header_page_size == page_size)
        and _checksum(wal[:24], (0, 0), big_endian) == stored
    )
    size = page_size or header_page_size
    if not 512 <= size <= 65536 or size & (size - 1):
        return []
    frame_size = FRAME_HEADER_SIZE + size
    count = (len(wal) - WAL_HEADER_SIZE) // frame_size
    raw = [
        wal[start : start + frame_size]
        for start in range(WAL_HEADER_SIZE, WAL_HEADER_SIZE + count * frame_size, frame_size)
    ]
    if not raw:
        return []
    # A damaged header spoils its salt too: then the first frame's stands for the generation.
    salt = wal[16:24] if header_valid else raw[0][8:16]
    found = []
    seed = stored if header_valid else None
    for index, frame in enumerate(raw):
        checksum = tuple(struct.unpack(">2I", frame[16:24]))
        whole = (
            seed is not None
            and frame[8:16] == salt
            and _frame_checksum(frame, seed, big_endian) == checksum
        )
        commit = struct.unpack(">I", frame[4:8])[0] != 0
        found.append(WalFrame(index, frame[FRAME_HEADER_SIZE:], whole, commit))
        # Past any damage, each frame is checked against the checksum its writer chained from.
        seed = (checksum[0], checksum[1])
    last = max((i for i, frame in enumerate(raw) if frame[8:16] == salt), default=-1)
    return found[: last + 1]


def replay(wal: bytes, *, page_size: int | None = None) -> WalReplay:
    """Read ``wal`` as SQLite replays it, and count the commits beyond where it would stop.

    Args:
        wal: The ``-wal`` file's bytes.
        page_size: The database's page size, from its own header; the log's header says it too,
            but that header may be the damaged part.
    """
    found = frames(wal, page_size=page_size)
    size = page_size or (struct.unpack(">I", wal[8:12])[0] if len(wal) >= 12 else 0)
    count = (len(wal) - WAL_HEADER_SIZE) // (FRAME_HEADER_SIZE + size) if size else 0
    replayed, damaged, lost = 0, None, 0
    for frame in found:
        if damaged is None:
            if not frame.whole:
                damaged = frame.index
            elif frame.commit:
                replayed = frame.index + 1
        elif frame.whole and frame.commit:
            lost += 1
    if damaged is not None and lost == 0:
        damaged = None  # a torn last write, or nothing but leftovers of an older generation
    elif damaged is not None:
        lost += 1  # the damaged frame's own transaction
    return WalReplay(frames=count, replayed=replayed, damaged_frame=damaged, lost_commits=lost)


def page_size_of(database_header: bytes) -> int | None:
    """The page size an SQLite database's first 100 bytes give, or ``None`` if they are not one."""
    if len(database_header) < 18 or not database_header.startswith(b"SQLite format 3\x00"):
        return None
    size: int = struct.unpack(">H", database_header[16:18])[0]
    return 65536 if size == 1 else size


def _frame_checksum(frame: bytes, seed: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """A frame's checksum: over its header's first 8 bytes, then its page, chained from ``seed``."""
    return _checksum(frame[24:], _checksum(frame[:8], seed, big_endian), big_endian)


def _checksum(data: bytes, seed: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from ``seed``."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0, s1 = seed
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1
