"""The local spool of QoS 1 messages: on disk before publishing, removed only after the PUBACK.

The spool is an SQLite database in WAL mode, so every committed message survives the agent being
killed. A durable append also waits for the disk (``synchronous=FULL``: one fsync), so the
message survives a power cut too, along with every append before it. The agent asks for that
whenever a message may have to wait (offline, or older messages unacknowledged); a message sent
at once on a healthy link, acknowledged milliseconds later, skips the fsync, which is most of
the agent's CPU time on a small computer. Removing an acknowledged message never waits for the
disk, and is committed together with the next append (or on closing): one transaction a second,
not two. Losing a removal to a crash or a power cut only means the message is sent again, and
downstream deduplicates by uuid; an append is never held back for a removal.

Messages keep the order they were appended in and their original payloads (and so their uuids);
after a restart they are sent first, oldest first. The spool numbers messages itself, one above
the highest number it handed out since it was opened or found spooled: a number is never that of
a message in the spool, nor of one acknowledged since opening. (SQLite's AUTOINCREMENT, which
never reuses a number at all, costs a second page written per append for its ``sqlite_sequence``
table; a spool created with it by an earlier version keeps it and works the same.) The spool is
bounded: when it is full, the oldest messages are dropped and counted, and the count survives
restarts too.

The spool is used from one thread only (the agent's loop); SDK callbacks never touch it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from alleycat_rider.errors import SpoolError

#: Default bound: one day of messages at one a second (about 20 MB on disk).
DEFAULT_SPOOL_MAX = 86_400
#: The page size of a new spool's database, in bytes.
PAGE_SIZE = 1024

_SCHEMA = """
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
"""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One message waiting in the spool for its PUBACK."""

    seq: int
    """Position in the spool: increases with every message appended; never that of a message
    still spooled or acknowledged since the spool was opened (see the module docstring)."""
    uuid: str
    """The message's uuid, the idempotency key downstream."""
    payload: bytes
    """The exact bytes to publish, again if need be."""


class Spool:
    """A bounded, ordered, crash-safe queue of messages on disk.

    Args:
        path: The SQLite database file; its directory is created if missing.
        max_messages: How many messages the spool keeps at most.

    Raises:
        SpoolError: the database cannot be created, opened or is not a spool.
    """

    def __init__(self, path: Path, *, max_messages: int = DEFAULT_SPOOL_MAX) -> None:
        if max_messages < 1:
            raise SpoolError(f"the spool must hold at least one message, not {max_messages}")
        self.path = path
        self.max_messages = max_messages
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every statement below is its own transaction unless grouped.
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=1.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {path}: {exc}") from exc
        try:
            # One agent per spool: the lock is taken once and held (no shared-memory index and
            # no file locking on every transaction), and a second agent is refused.
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            # A new spool gets 1 KB pages (a message is about 250 bytes): each append writes one
            # page to the WAL, a quarter of the default 4 KB, which also costs less CPU time
            # (copying, checksums, the file growing). An existing spool keeps its page size.
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(f"the spool {path} cannot use WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._depth: int = self._db.execute("SELECT count(*) FROM messages").fetchone()[0]
            self._dropped: int = self._db.execute(
                "SELECT value FROM counters WHERE name = 'dropped'"
            ).fetchone()[0]
            self._last_seq: int = self._db.execute(
                "SELECT coalesce(max(seq), 0) FROM messages"
            ).fetchone()[0]
        except sqlite3.Error as exc:
            self._db.close()
            if "locked" in str(exc):
                raise SpoolError(
                    f"the spool {path} is in use by another agent: give each its own --spool"
                ) from exc
            raise SpoolError(f"cannot use the spool {path}: {exc} (move it aside?)") from exc

    @property
    def depth(self) -> int:
        """How many messages wait for their PUBACK."""
        return self._depth

    @property
    def dropped(self) -> int:
        """How many messages were dropped because the spool was full, over its whole life."""
        return self._dropped

    @property
    def last_seq(self) -> int:
        """The newest message's sequence number: appended, or spooled at opening (else 0)."""
        return self._last_seq

    def append(self, uuid: str, payload: bytes, *, durable: bool = True) -> tuple[int, int]:
        """Store a message, dropping the oldest ones if the spool is full.

        Args:
            uuid: The message's uuid.
            payload: The bytes to publish.
            durable: Wait until it is on disk (fsync), so that it survives a power cut.

        Returns:
            The new message's sequence number, and how many old messages were dropped for it.
        """
        overflow = max(0, self._depth + 1 - self.max_messages)
        db = self._db
        try:
            if durable:
                if db.in_transaction:  # the safety level cannot change inside a transaction
                    db.execute("COMMIT")
                db.execute("PRAGMA synchronous=FULL")
            if overflow:
                if not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "DELETE FROM messages WHERE seq IN "
                    "(SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                    (overflow,),
                )
                db.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'dropped'", (overflow,)
                )
            seq = self._last_seq + 1
            db.execute(
                "INSERT INTO messages (seq, uuid, payload) VALUES (?, ?, ?)", (seq, uuid, payload)
            )
            # Without a removal or a drop before it, one statement is one transaction.
            if db.in_transaction:
                db.execute("COMMIT")
            if durable:
                db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            self._roll_back()
            raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc
        self._depth += 1 - overflow
        self._dropped += overflow
        self._last_seq = seq
        return seq, overflow

    def ack(self, seq: int) -> bool:
        """Remove a message whose PUBACK arrived; return whether it was still in the spool.

        The removal is committed with the next append, or on closing.
        """
        if not self._db.in_transaction:
            self._execute("BEGIN IMMEDIATE")
        removed = self._execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount > 0
        if removed:
            self._depth -= 1
        return removed

    def pending(self, *, after: int = 0, limit: int = 100) -> list[SpooledMessage]:
        """The oldest messages with a sequence number above ``after``, oldest first."""
        rows = self._execute(
            "SELECT seq, uuid, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [SpooledMessage(seq, uuid, bytes(payload)) for seq, uuid, payload in rows]

    def get(self, seqs: Iterable[int]) -> list[SpooledMessage]:
        """The messages among ``seqs`` that are still in the spool, oldest first."""
        wanted = sorted(set(seqs))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = self._execute(
            f"SELECT seq, uuid, payload FROM messages WHERE seq IN ({marks}) ORDER BY seq",
            wanted,
        ).fetchall()
        return [SpooledMessage(seq, uuid, bytes(payload)) for seq, uuid, payload in rows]

    def close(self) -> None:
        """Commit the last removals and close; what is still spooled is sent after a restart."""
        try:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc
        finally:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _execute(self, sql: str, parameters: Iterable[object] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, tuple(parameters))
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot use the spool {self.path}: {exc}") from exc

    def _roll_back(self) -> None:
        """Undo a failed append and the removals waiting for it; recount what is spooled."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._depth = self._db.execute("SELECT count(*) FROM messages").fetchone()[0]
        except sqlite3.Error:
            pass  # the error being raised already says the spool cannot be used
