"""The spool's database file: its settings, its check and recovery on opening, its reserved room.

:class:`~alleycat_rider.agent.spool.Spool` keeps the queue; this module sets its SQLite database up,
asks SQLite whether the file is sound, spools again what a damaged copy still holds
(:mod:`alleycat_rider.agent.salvage`), and reserves the room the spool may need later.

The room: free pages in the database and a write-ahead log long enough for ``reserve`` messages
(an hour's worth by default). A blob is written through the log and into the database (a
checkpoint), then deleted: its pages stay in the file, free, for messages to take, and the log
keeps its length (SQLite reuses it from its start after a checkpoint and never truncates it while
the spool is open). Written, not sparse: the disk has given the blocks, so a disk that fills up
later cannot take them.
"""

from __future__ import annotations

import dataclasses
import errno
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alleycat_rider.agent import salvage
from alleycat_rider.errors import SpoolError

#: The page size of a new spool's database, in bytes.
PAGE_SIZE = 1024
#: Default room reserved on opening, in messages: an hour's worth at one a second.
DEFAULT_SPOOL_RESERVE = 3600
#: The bytes a ride message takes in the spool at most, to size the reserve (about 280 today).
RESERVE_ROW_BYTES = 320
#: The log is written back into the database once it holds this many pages (SQLite's default).
CHECKPOINT_PAGES = 1000
#: SQLite's primary result codes for a disk that does not take writes: read-only, I/O error, full.
_UNWRITABLE = {8: "the file system is read-only", 10: "the disk refused a write (I/O error)",
               13: "the disk is full"}  # fmt: skip
#: SQLite's primary result codes for a damaged database: corrupt, not a database.
_CORRUPT = (11, 26)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
CREATE TABLE IF NOT EXISTS reserve (room BLOB);
"""


@dataclass(frozen=True, slots=True)
class Opened:
    """A spool's database, open, checked, recovered if need be, and its room reserved."""

    db: sqlite3.Connection
    damage: salvage.SpoolDamage | None
    """A damaged spool found (and copied aside) on opening, else ``None``."""
    reserved: int
    """The room reserved, in bytes of the database and its log."""


def open_spool(path: Path, *, reserve: int, report: Callable[..., None]) -> Opened:
    """Open the spool's database: check it, recover it if damaged (reported), reserve its room.

    Raises:
        SpoolError: it cannot be opened, is in use, is not a spool, or the disk has no room.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        damage = salvage.inspect(path)
        if damage is not None and damage.database:
            remove_files(path)
        db, damage = _connect(path, damage)
        try:
            if problem := check(db):
                db.close()
                db, damage = _connect(path, _anew(path, damage, f"corrupt: {problem}"))
            if damage is not None:
                last_seq = db.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
                damage = recover(db, damage, last_seq)
                counts = {name: getattr(damage, name) for name in salvage.COUNTS}
                report("warning", damage.describe(path), **counts, copy=str(damage.copy))
            reserved = reserve_room(db, reserve)
        except BaseException:
            db.close()
            raise
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(f"cannot use the spool {path}: {exc}{hint(exc)}") from exc
    return Opened(db, damage, reserved)


def _connect(
    path: Path, damage: salvage.SpoolDamage | None
) -> tuple[sqlite3.Connection, salvage.SpoolDamage | None]:
    """Connect and set the spool up; a database SQLite finds damaged is made anew."""
    # Autocommit mode: every statement is its own transaction unless grouped.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
    try:
        mode = set_up(db)
        if mode == "wal":
            db.execute("SELECT count(*), max(seq) FROM messages").fetchone()
    except sqlite3.Error as exc:
        db.close()
        if "locked" in str(exc):
            if damage is not None:  # not ours to judge while another agent writes it
                salvage.remove_copy(damage.copy)
            raise SpoolError(
                f"the spool {path} is in use by another agent: give each its own --spool"
            ) from exc
        if corrupt(exc) and not (damage and damage.database) and salvage.is_sqlite(path):
            return _connect(path, _anew(path, damage, f"corrupt: {exc}"))
        # Moving aside a healthy spool on a full or read-only disk would lose its messages.
        advice = hint(exc) or " (not a spool? move it aside)"
        raise SpoolError(f"cannot use the spool {path}: {exc}{advice}") from exc
    if mode != "wal":
        db.close()
        raise SpoolError(f"the spool {path} cannot use WAL mode (got {mode!r})")
    return db, damage


def _anew(path: Path, damage: salvage.SpoolDamage | None, what: str) -> salvage.SpoolDamage:
    """The database file is damaged: copy it aside (unless done) and remove it, to make anew."""
    what = f"its database file is {what}"
    if damage is None:
        damage = salvage.SpoolDamage(what, salvage.copy_aside(path), True)
    else:  # the log is damaged too, and the files are copied already
        damage = dataclasses.replace(damage, what=f"{damage.what}, and {what}", database=True)
    remove_files(path)
    return damage


def set_up(db: sqlite3.Connection) -> str:
    """Set the spool's connection up and make its tables; return the journal mode it got.

    Raises:
        sqlite3.Error: the file cannot be used (locked, damaged, not a database, no room).
    """
    # One agent per spool: the lock is taken once and held (no shared-memory index and no file
    # locking on every transaction), and a second agent is refused.
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    # A new spool gets 1 KB pages (a message is about 250 bytes): each append writes one page to
    # the WAL, a quarter of the default 4 KB, which also costs less CPU time (copying,
    # checksums, the file growing). An existing spool keeps its page size.
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    mode = str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
    if mode != "wal":
        return mode
    db.execute("PRAGMA synchronous=NORMAL")
    # Deleted messages are zeroed in their page, at no cost in writes ("fast"): a damaged
    # spool's copy then holds little but the messages that were waiting.
    db.execute("PRAGMA secure_delete=FAST")
    db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
    db.executescript(SCHEMA)
    return mode


def check(db: sqlite3.Connection) -> str | None:
    """What SQLite finds wrong with the database's structure (``quick_check``), or ``None``."""
    try:
        found = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if not corrupt(exc):
            raise
        return str(exc)
    return None if found == "ok" else str(found)


def recover(
    db: sqlite3.Connection, damage: salvage.SpoolDamage, last_seq: int
) -> salvage.SpoolDamage:
    """Spool again, after ``last_seq``, what the damaged copy holds that SQLite lost.

    Returns:
        ``damage`` with the counts of what was recovered and what is lost.
    """
    dug = salvage.dig(
        damage.copy, replayed_frames=None if damage.database else damage.replayed_frames
    )
    spooled = [uuid for (uuid,) in db.execute("SELECT uuid FROM messages")]
    found, unreadable = salvage.to_spool(dug, spooled)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO messages (seq, uuid, payload) VALUES (?, ?, ?)",
        [(last_seq + n, uuid, payload) for n, (uuid, payload) in enumerate(found, 1)],
    )
    db.execute("COMMIT")
    return dataclasses.replace(
        damage, recovered=len(found), unreadable=unreadable, damaged_frames=dug.damaged_frames
    )


def reserve_room(db: sqlite3.Connection, messages: int) -> int:
    """Make room for ``messages`` on disk now; return the bytes held (database and log).

    Raises:
        sqlite3.Error: the disk has no room for it (or another error of SQLite's).
    """
    if messages <= 0:
        return 0
    page_size: int = db.execute("PRAGMA page_size").fetchone()[0]
    per_page = max(1, (page_size - 8) // (RESERVE_ROW_BYTES + 2))
    pages = -(-messages // per_page)
    pages += pages // 32 + 2  # the table's interior pages
    # One frame per append until a checkpoint, plus the transaction that passes it.
    frames = min(messages + messages // 8, CHECKPOINT_PAGES) + 16
    free: int = db.execute("PRAGMA freelist_count").fetchone()[0]
    filler = max(frames, pages if free < pages else 0)
    # An overflow page holds its page less a 4-byte pointer.
    db.execute("INSERT INTO reserve (room) VALUES (zeroblob(?))", ((page_size - 4) * filler,))
    db.execute("DELETE FROM reserve")
    busy, _log, _done = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    if busy:
        raise sqlite3.OperationalError("the reserve could not be written back into the database")
    return page_size * (max(free, filler) + frames)


def refusal(exc: sqlite3.Error) -> str | None:
    """Why the disk refused a write, if that is what ``exc`` says; else ``None``."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _UNWRITABLE.get(code & 0xFF)


def corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the database is damaged (corrupt, or not a database any more)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT


def hint(exc: BaseException) -> str:
    """What to do about a disk that refuses writes (never "move it aside": that loses data)."""
    reason = refusal(exc) if isinstance(exc, sqlite3.Error) else None
    if reason is None and isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS):
        reason = "the disk is full" if exc.errno == errno.ENOSPC else "the file system is read-only"
    if reason is None:
        return ""
    return f" ({reason}: free some space or make it writable; the spool's messages are kept)"


def remove_files(path: Path) -> None:
    """Remove a spool's files (once copied aside): a new one is made in their place."""
    for suffix in ("-wal", "-shm", ""):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
