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

A disk that stops taking writes during a ride (full, or remounted read-only) does not stop the
ride: new messages are held in memory (at most ``memory_max``, the oldest dropped and counted
beyond), sent from there like spooled ones, and written to the spool as soon as it takes writes
again, which is tried with every new message. The first refusal is reported once, and so is the
recovery; ``unspooled`` counts the messages that could not be written when they were made. What
is still held in memory when the agent stops is lost, and reported. Removals that cannot be
written are kept in memory too, and written with the rest (or, lost, only cause a resend).

Opening checks the database and its log; a damaged spool is copied aside, every whole ride
message SQLite cannot give back is spooled again, and the recovered and lost are reported. Then
room for ``reserve`` messages is reserved on disk, so a disk that fills up later cannot take it
(:mod:`alleycat_rider.agent.spoolfile`, :mod:`alleycat_rider.agent.salvage`). What the disk refuses
is held by :mod:`alleycat_rider.agent.spoolmemory`.

The spool is used from one thread only (the agent's loop); SDK callbacks never touch it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from alleycat_rider.agent import salvage
from alleycat_rider.agent.spoolfile import DEFAULT_SPOOL_RESERVE, PAGE_SIZE, hint, open_spool
from alleycat_rider.agent.spoolfile import refusal as disk_refusal
from alleycat_rider.agent.spoolmemory import Held, SpooledMessage
from alleycat_rider.errors import SpoolError

__all__ = ["DEFAULT_SPOOL_MAX", "DEFAULT_SPOOL_RESERVE", "PAGE_SIZE", "Spool", "SpooledMessage"]

#: Default bound: one day of messages at one a second (about 20 MB on disk).
DEFAULT_SPOOL_MAX = 86_400
#: Default bound of the messages held in memory while the disk refuses writes: an hour's worth.
DEFAULT_MEMORY_MAX = 3600
#: Drops the oldest ``?`` messages to make room.
DROP_OLDEST = "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)"
#: Where the spool reports (``Reporter.event``'s signature): level, message, fields.
SpoolReport = Callable[..., None]


class Spool:
    """A bounded, ordered, crash-safe queue of messages on disk.

    Args:
        path: The SQLite database file; its directory is created if missing.
        max_messages: How many messages the spool keeps at most.
        memory_max: How many messages it holds in memory at most while the disk refuses writes.
        reserve: How many messages' room to reserve on disk on opening (at most
            ``max_messages``); 0 reserves nothing.
        report: Where to report a damaged spool found on opening, the disk refusing writes and
            taking them again (``Reporter.event``); nowhere if ``None``.

    Raises:
        SpoolError: the database cannot be created, opened, is not a spool, or the disk has no
            room for the reserve.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int = DEFAULT_SPOOL_MAX,
        memory_max: int = DEFAULT_MEMORY_MAX,
        reserve: int = DEFAULT_SPOOL_RESERVE,
        report: SpoolReport | None = None,
    ) -> None:
        if max_messages < 1:
            raise SpoolError(f"the spool must hold at least one message, not {max_messages}")
        self.path = path
        self.max_messages = max_messages
        self._held = Held(memory_max)
        self.memory_max = self._held.limit
        self._report: SpoolReport = report if report is not None else _ignore
        self._unremoved: set[int] = set()
        """Spooled messages acknowledged whose removal the disk refused."""
        self._removing: list[int] = []
        """Removals in the open transaction, committed with the next append."""
        self._refusal: str | None = None
        opened = open_spool(path, reserve=min(reserve, max_messages), report=self._report)
        self._db = db = opened.db
        self.damage: salvage.SpoolDamage | None = opened.damage
        """A damaged spool found (and copied aside) on opening, else ``None``."""
        self.reserved = opened.reserved
        """The room reserved on opening, in bytes of the database and its log."""
        try:
            self._depth: int = db.execute("SELECT count(*) FROM messages").fetchone()[0]
            self._dropped: int = db.execute(
                "SELECT value FROM counters WHERE name = 'dropped'"
            ).fetchone()[0]
            self._last_seq: int = db.execute(
                "SELECT coalesce(max(seq), 0) FROM messages"
            ).fetchone()[0]
        except sqlite3.Error as exc:
            db.close()
            raise SpoolError(f"cannot use the spool {path}: {exc}{hint(exc)}") from exc

    @property
    def depth(self) -> int:
        """How many messages wait for their PUBACK, on disk or held in memory."""
        return self._depth - len(self._unremoved) + len(self._held)

    @property
    def dropped(self) -> int:
        """How many messages were dropped because the spool was full, over its whole life
        (and, while the disk refused writes, because the memory was full)."""
        return self._dropped + self._held.dropped

    @property
    def in_memory(self) -> int:
        """Messages held in memory because the disk refused them: lost if the agent stops."""
        return len(self._held)

    @property
    def unspooled(self) -> int:
        """Messages that could not be written to the spool when they were made (since opening)."""
        return self._held.unspooled

    @property
    def refusal(self) -> str | None:
        """Why the disk refuses writes, while it does; ``None`` when the spool is writable."""
        return self._refusal

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

        Raises:
            SpoolError: the spool cannot be used for another reason than the disk refusing
                writes (which only holds the message in memory).
        """
        if self._held or self._unremoved:
            self._write_held()
        if self._held:  # the disk still refuses: keep the order, hold this one too
            return self._hold(uuid, payload)
        try:
            return self._append(uuid, payload, durable=durable)
        except SpoolError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, sqlite3.Error) and disk_refusal(cause)):
                raise
            self._refused(cause)
            return self._hold(uuid, payload)

    def _append(self, uuid: str, payload: bytes, *, durable: bool) -> tuple[int, int]:
        overflow = max(0, self._depth + 1 - self.max_messages)
        db = self._db
        try:
            if durable:
                if db.in_transaction:  # the safety level cannot change inside a transaction
                    db.execute("COMMIT")
                    self._removing.clear()
                db.execute("PRAGMA synchronous=FULL")
            if overflow:
                if not db.in_transaction:
                    db.execute("BEGIN IMMEDIATE")
                db.execute(DROP_OLDEST, (overflow,))
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
        self._removing.clear()
        self._depth += 1 - overflow
        self._dropped += overflow
        self._last_seq = seq
        return seq, overflow

    def ack(self, seq: int) -> bool:
        """Remove a message whose PUBACK arrived; return whether it was still in the spool.

        The removal is committed with the next append, or on closing.
        """
        if self._held.pop(seq):
            return True
        if seq in self._unremoved:
            return False
        if self._refusal is not None:
            return self._defer_removal(seq)
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            removed = self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount > 0
        except sqlite3.Error as exc:
            if not disk_refusal(exc):
                raise SpoolError(f"cannot use the spool {self.path}: {exc}") from exc
            self._roll_back()
            self._refused(exc)
            return self._defer_removal(seq)
        if removed:
            self._depth -= 1
            self._removing.append(seq)
        return removed

    def pending(self, *, after: int = 0, limit: int = 100) -> list[SpooledMessage]:
        """The oldest messages with a sequence number above ``after``, oldest first."""
        rows = self._execute(
            "SELECT seq, uuid, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit + len(self._unremoved)),
        ).fetchall()
        found = [
            SpooledMessage(seq, uuid, bytes(payload))
            for seq, uuid, payload in rows
            if seq not in self._unremoved
        ][:limit]
        if len(found) < limit:  # held in memory: newer than anything on disk
            found.extend(self._held.after(after, limit - len(found)))
        return found

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
        found = [
            SpooledMessage(seq, uuid, bytes(payload))
            for seq, uuid, payload in rows
            if seq not in self._unremoved
        ]
        return found + self._held.among(wanted)

    def close(self) -> None:
        """Commit the last removals and close; what is still spooled is sent after a restart.

        Messages held in memory are written if the disk takes them now, else reported lost.

        Raises:
            SpoolError: the last removals cannot be committed for another reason than the disk
                refusing writes.
        """
        try:
            if self._held or self._unremoved:
                self._write_held()
            if self._held:
                self._report(
                    "error",
                    "messages held in memory are lost: the spool still cannot be written",
                    lost=len(self._held),
                    reason=self._refusal,
                )
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if not disk_refusal(exc):
                raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc
            self._roll_back()  # only removals are lost: those messages are sent again
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
        """Undo a failed write and the removals waiting for it; recount what is spooled.

        The removals undone are kept in memory, to be written with the next write.
        """
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._unremoved.update(self._removing)
            self._removing.clear()
            self._depth = self._db.execute("SELECT count(*) FROM messages").fetchone()[0]
        except sqlite3.Error:
            pass  # the error being raised already says the spool cannot be used

    def _hold(self, uuid: str, payload: bytes) -> tuple[int, int]:
        """Keep a message the disk refused in memory, dropping the oldest held if full."""
        seq = self._last_seq + 1
        overflow = self._held.hold(seq, uuid, payload)
        self._last_seq = seq
        return seq, overflow

    def _defer_removal(self, seq: int) -> bool:
        """Remove a spooled message later: the disk refuses writes now."""
        if not self._execute("SELECT 1 FROM messages WHERE seq = ?", (seq,)).fetchone():
            return False
        self._unremoved.add(seq)
        return True

    def _refused(self, exc: sqlite3.Error) -> None:
        """The disk refused a write: say so the first time, until it takes writes again."""
        if self._refusal is None:
            self._refusal = disk_refusal(exc)
            self._report(
                "warning",
                "the spool cannot be written: holding new messages in memory until it can",
                spool=str(self.path),
                reason=self._refusal,
                error=str(exc),
                memory_max=self.memory_max,
            )

    def _write_held(self) -> None:
        """Try to write what is held in memory to the spool, in one durable transaction."""
        db = self._db
        held = self._held.messages()
        try:
            if db.in_transaction:
                db.execute("COMMIT")
                self._removing.clear()
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "DELETE FROM messages WHERE seq = ?", [(seq,) for seq in sorted(self._unremoved)]
            )
            depth = db.execute("SELECT count(*) FROM messages").fetchone()[0]
            overflow = max(0, depth + len(held) - self.max_messages)
            if overflow:
                db.execute(DROP_OLDEST, (overflow,))
            db.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'dropped'",
                (overflow + self._held.dropped,),
            )
            db.executemany(
                "INSERT INTO messages (seq, uuid, payload) VALUES (?, ?, ?)",
                [(m.seq, m.uuid, m.payload) for m in held],
            )
            db.execute("COMMIT")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            self._roll_back()
            if not disk_refusal(exc):
                raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from exc
            return
        self._depth = depth - overflow + len(held)
        self._dropped += overflow + self._held.dropped
        self._held.written()
        self._unremoved.clear()
        if self._refusal is not None:
            self._report("info", "the spool can be written again", written=len(held))
            self._refusal = None


def _ignore(level: str, message: str, **fields: Any) -> None:
    """Report nowhere."""
