"""Counts in words: ``1 shard``, ``4 shards``, ``1,000 riders``."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, the noun in the plural unless the number is one.

    Args:
        number: How many.
        noun: The singular (``"shard"``).
        plural: The plural when it is not the singular plus ``s`` (``"processes"``).
    """
    word = noun if number == 1 else plural or f"{noun}s"
    return f"{number:,} {word}"
