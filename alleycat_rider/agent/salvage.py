"""Finding a damaged spool on opening, copying it aside, and digging out every message it holds.

SQLite keeps what it can read of a damaged spool and drops the rest without a word: a log
damaged in its middle loses every commit after the damage, and a database file cut short or
overwritten cannot be read at all. The bytes of those messages are often still there. Before the
spool is opened, :func:`inspect` checks the database file (its header, and its size against the
pages the header counts) and the write-ahead log (read as SQLite replays it,
:mod:`alleycat_rider.agent.wal`); the spool also asks SQLite to check the database's structure
(``PRAGMA quick_check``). Damage of either kind copies the files aside (``NAME.damaged-N``, with
``-wal`` beside it) before anything is overwritten.

:func:`dig` then reads the copy's bytes, the database's pages and the log's frames of its current
generation, for complete ride messages: each candidate must parse and validate as a
:class:`~alleycat_rider.core.message.RideMessage` *and* be byte for byte what the agent would
have written for it, so garbage is never sent. A message whose uuid appears with two different
payloads is taken from a frame whose checksum verifies, or else not at all. Messages SQLite
still reads stay where they are; messages the readable part shows deleted (acknowledged) are not
brought back; every other message found is spooled again (the uuid makes a repeat harmless
downstream). What is seen but cannot be read whole is counted: those messages are lost.

Pure but for reading and copying the spool's files.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alleycat_rider.agent import wal
from alleycat_rider.core.message import MessageError, RideMessage
from alleycat_rider.plural import counted

#: The first bytes of an SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Where a ride message begins: the agent writes its uuid first.
_START = re.compile(rb'\{"uuid":"')
#: How far past its start a ride message ends, at most (a long name escaped, long numbers).
_MAX_MESSAGE = 640


#: The counts a damage report carries, as :class:`SpoolDamage` names them.
COUNTS = ("recovered", "unreadable", "lost_commits", "damaged_frames", "missing_pages")


@dataclass(frozen=True, slots=True)
class SpoolDamage:
    """A damaged spool found on opening, where its copy is, and what was recovered from it."""

    what: str
    """What is damaged, in words: "its write-ahead log is corrupt at frame 8", ..."""
    copy: Path
    """The copy of the database; its log (if any) is beside it with ``-wal`` appended."""
    database: bool
    """The database file itself is damaged: the spool is made anew from what is recovered."""
    lost_commits: int = 0
    """Commits of the log written whole after its damage, which SQLite drops."""
    frame: int | None = None
    """The log's first damaged frame, if the log is damaged."""
    replayed_frames: int = 0
    """Frames of the log SQLite replays (when only the log is damaged)."""
    recovered: int = 0
    """Messages SQLite could not read, found whole in the copy and spooled again."""
    unreadable: int = 0
    """Messages seen in the copy but not readable whole: lost."""
    damaged_frames: int = 0
    """Frames of the log whose checksum fails: they may have held messages not seen at all."""
    missing_pages: int = 0
    """Pages the database's header counts but its file does not hold."""

    def describe(self, path: Path) -> str:
        """One line saying what happened, what was recovered and lost, and where the copy is."""
        unknown = []
        if self.damaged_frames:
            unknown.append(f"{counted(self.damaged_frames, 'damaged frame')} of the log")
        if self.missing_pages:
            unknown.append(f"{counted(self.missing_pages, 'missing page')} of the database")
        more = f" ({' and '.join(unknown)} may have held more)" if unknown else ""
        has_log = self.copy.with_name(self.copy.name + "-wal").exists()
        log = f" and {self.copy}-wal" if has_log else ""
        return (
            f"the spool {path} was damaged ({self.what}): "
            f"{counted(self.recovered, 'message')} recovered from the damaged files and spooled "
            f"again, {counted(self.unreadable, 'message')} seen there unreadable and lost{more}; "
            f"the damaged files are copied to {self.copy}{log}"
        )


@dataclass(slots=True)
class Dug:
    """The ride messages found in a damaged spool's bytes."""

    trusted: dict[str, bytes] = field(default_factory=dict)
    """Payloads by uuid found in frames whose checksum verifies: as written."""
    untrusted: dict[str, set[bytes]] = field(default_factory=dict)
    """Payloads by uuid found elsewhere (the database file, damaged frames)."""
    settled: set[str] = field(default_factory=set)
    """Uuids found in what SQLite replays: spooled still, or deleted (acknowledged)."""
    unreadable: set[bytes] = field(default_factory=set)
    """The uuid text (36 bytes, maybe damaged) of each message start that does not read whole."""
    damaged_frames: int = 0
    """Frames of the log whose checksum fails."""

    def payload(self, uuid: str) -> bytes | None:
        """The message's bytes: from a verified frame, else the one version seen; ``None`` if
        unverified versions disagree."""
        if uuid in self.trusted:
            return self.trusted[uuid]
        versions = self.untrusted.get(uuid, set())
        return next(iter(versions)) if len(versions) == 1 else None


def inspect(path: Path) -> SpoolDamage | None:
    """Check a spool's files before SQLite opens them; copy them aside if they are damaged.

    Returns ``None`` for a spool that is sound as far as can be told without opening it (or
    that does not exist yet), else where the copy is and what is damaged.

    Raises:
        OSError: the files cannot be read or copied (nothing is opened then).
    """
    try:
        with path.open("rb") as database:
            head = database.read(100)
            size = os.fstat(database.fileno()).st_size
    except FileNotFoundError:
        return None
    if not head.startswith(SQLITE_MAGIC):
        return None  # not a spool (or an empty file SQLite makes one of): SQLite says which
    page_size = wal.page_size_of(head)
    if page_size is None or size < 100:
        return None
    try:
        log = path.with_name(path.name + "-wal").read_bytes()
    except FileNotFoundError:
        log = b""
    if len(log) < wal.WAL_HEADER_SIZE + wal.FRAME_HEADER_SIZE + page_size:
        # Without a log, the file must hold every page its header counts. (With one, the log
        # may hold them: a checkpoint on a full disk, say. SQLite's own check decides then.)
        pages = _pages_counted(head)
        if size % page_size or (pages is not None and size < pages * page_size):
            missing = 0 if pages is None else max(0, pages - size // page_size)
            what = f"its database file is cut short at {size:,} bytes"
            return SpoolDamage(what, copy_aside(path), True, missing_pages=missing)
        return None
    found = wal.replay(log, page_size=page_size)
    if not found.damaged or found.damaged_frame is None:
        return None
    return SpoolDamage(
        f"its write-ahead log is corrupt at frame {found.damaged_frame}",
        copy_aside(path),
        False,
        lost_commits=found.lost_commits,
        frame=found.damaged_frame,
        replayed_frames=found.replayed,
    )


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` begins as an SQLite database does (a spool, maybe a damaged one)."""
    try:
        with path.open("rb") as file:
            return file.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def copy_aside(path: Path) -> Path:
    """Copy the database and its log to ``NAME.damaged-N`` (the first N free); return the copy."""
    number = 1
    while path.with_name(f"{path.name}.damaged-{number}").exists():
        number += 1
    copy = path.with_name(f"{path.name}.damaged-{number}")
    for suffix in ("-wal", "-shm", ""):  # the database last: its presence marks a whole copy
        original = path.with_name(path.name + suffix)
        if original.exists():
            target = copy.with_name(copy.name + suffix)
            shutil.copyfile(original, target)
            with target.open("rb+") as written:
                os.fsync(written.fileno())
    return copy


def remove_copy(copy: Path) -> None:
    """Remove a copy made by :func:`copy_aside`."""
    for suffix in ("", "-wal", "-shm"):
        copy.with_name(copy.name + suffix).unlink(missing_ok=True)


def dig(copy: Path, *, replayed_frames: int | None) -> Dug:
    """Find every whole ride message in a damaged spool's copy.

    Args:
        copy: The copy of the database (its log beside it, if any).
        replayed_frames: How many of the log's frames SQLite replays, when it can read the
            database: messages found there and in the database file are ``settled`` (SQLite
            still has them, or they were deleted). ``None`` when the database cannot be read:
            nothing is settled, everything found is to be spooled again.
    """
    dug = Dug()
    database = copy.read_bytes() if copy.exists() else b""
    page_size = wal.page_size_of(database[:100])
    settled = replayed_frames is not None
    _scan(database, dug, trusted=False, settled=settled)
    log_path = copy.with_name(copy.name + "-wal")
    log = log_path.read_bytes() if log_path.exists() else b""
    for frame in wal.frames(log, page_size=page_size):
        before = frame.index < (replayed_frames or 0)
        _scan(frame.page, dug, trusted=frame.whole, settled=settled and before)
        dug.damaged_frames += not frame.whole
    return dug


def _scan(data: bytes, dug: Dug, *, trusted: bool, settled: bool) -> None:
    """Add the ride messages found whole in ``data`` to ``dug``."""
    for start in _START.finditer(data):
        begin = start.start()
        payload = _message_at(data, begin)
        if payload is None:
            dug.unreadable.add(data[begin + 9 : begin + 45])
            continue
        uuid = payload[9:45].decode()
        if settled:
            dug.settled.add(uuid)
        if trusted:
            dug.trusted[uuid] = payload
        else:
            dug.untrusted.setdefault(uuid, set()).add(payload)


def _message_at(data: bytes, begin: int) -> bytes | None:
    """The ride message starting at ``begin``, if one is there whole and exactly as written."""
    window = data[begin : begin + _MAX_MESSAGE]
    end = window.find(b"}")
    while end != -1:
        candidate = window[: end + 1]
        try:
            if RideMessage.from_json(candidate).to_json() == candidate:
                return candidate
        except MessageError:
            pass
        end = window.find(b"}", end + 1)
    return None


def to_spool(dug: Dug, spooled: Iterable[str]) -> tuple[list[tuple[str, bytes]], int]:
    """The messages to spool again, oldest first, and how many seen are unreadable (lost).

    Args:
        dug: What :func:`dig` found.
        spooled: The uuids of the messages SQLite still reads.
    """
    keep = set(spooled) | dug.settled
    chosen, disagreeing = [], 0
    for uuid in dug.trusted.keys() | dug.untrusted.keys():
        payload = dug.payload(uuid)
        if uuid in keep:
            continue
        if payload is None:
            disagreeing += 1
        else:
            chosen.append((uuid, payload))
    chosen.sort(key=lambda item: _age(item[1]))
    readable = {uuid.encode() for uuid in dug.trusted.keys() | dug.untrusted.keys() | keep}
    return chosen, len(dug.unreadable - readable) + disagreeing


def _age(payload: bytes) -> tuple[int, int]:
    message = RideMessage.from_json(payload)
    return message.device_timestamp, message.second


def _pages_counted(head: bytes) -> int | None:
    """The database size in pages its header gives, if the header says it is valid."""
    pages, changes, valid_for = (
        struct.unpack(">I", head[28:32])[0],
        struct.unpack(">I", head[24:28])[0],
        struct.unpack(">I", head[92:96])[0],
    )
    return pages if pages and changes == valid_for else None
