"""What a spool holds in memory while the disk refuses writes (full, or remounted read-only).

The messages held are newer than every spooled one and keep their order; at most ``limit`` are
held, the oldest dropped and counted beyond. They are written to the spool as soon as it takes
writes again, and lost if the agent stops before it does (:class:`~alleycat_rider.agent.spool.Spool`
reports both).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One message waiting in the spool for its PUBACK."""

    seq: int
    """Position in the spool: increases with every message appended; never that of a message
    still spooled or acknowledged since the spool was opened (see :mod:`.spool`)."""
    uuid: str
    """The message's uuid, the idempotency key downstream."""
    payload: bytes
    """The exact bytes to publish, again if need be."""


class Held:
    """The messages the disk refused, oldest first.

    Args:
        limit: How many messages are held at most (at least one).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._messages: dict[int, SpooledMessage] = {}
        self.dropped = 0
        """Messages dropped for room since what is held was last written."""
        self.unspooled = 0
        """Messages held since the spool was opened: they could not be written when made."""

    def __len__(self) -> int:
        return len(self._messages)

    def hold(self, seq: int, uuid: str, payload: bytes) -> int:
        """Hold a message; return how many held ones were dropped for its room (0 or 1)."""
        overflow = 0
        if len(self._messages) >= self.limit:
            del self._messages[next(iter(self._messages))]
            self.dropped += 1
            overflow = 1
        self._messages[seq] = SpooledMessage(seq, uuid, payload)
        self.unspooled += 1
        return overflow

    def pop(self, seq: int) -> bool:
        """Forget message ``seq`` (acknowledged); return whether it was held."""
        return self._messages.pop(seq, None) is not None

    def after(self, after: int, limit: int) -> list[SpooledMessage]:
        """The oldest ``limit`` messages held with a sequence number above ``after``."""
        newer = (message for seq, message in self._messages.items() if seq > after)
        return list(itertools.islice(newer, limit))

    def among(self, seqs: Iterable[int]) -> list[SpooledMessage]:
        """The messages held among ``seqs``, in the order of ``seqs``."""
        return [self._messages[seq] for seq in seqs if seq in self._messages]

    def messages(self) -> list[SpooledMessage]:
        """Every message held, oldest first."""
        return list(self._messages.values())

    def written(self) -> None:
        """What was held is in the spool now, and the drops are counted there."""
        self._messages.clear()
        self.dropped = 0
