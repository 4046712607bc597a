"""What opening the spool costs: reserving its room, checking it, recovering a damaged one.

Prints the wall time of ``Spool(path)`` for a new spool (the reserve written), a sound spool
holding ``--messages`` (SQLite's ``quick_check`` reads all of it), one killed with 900 messages
in its log (read twice: as SQLite replays it, then by SQLite), and damaged spools of each
kind the agent recovers from (a byte flipped in the middle of the log, random bytes over it, the
log or the database file cut in half), with how many messages came back and how many are lost.
A damaged spool is a snapshot of a live one's files (what a SIGKILL leaves), then damaged.

    .venv/bin/python -m benchmarks.spool_open --messages 86400 --damaged 300
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from alleycat_rider.agent.spool import Spool
from alleycat_rider.core.message import MessageEncoder, RiderIdentity, uuid4
from tests.alleycat_rider.test_spool_recovery import damage

KINDS = ("flipped byte mid-log", "random bytes over the log", "log cut in half",
         "database cut in half")  # fmt: skip


def payloads(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """``count`` ride messages of one rider, a second apart."""
    rng = random.Random(seed)
    encoder = MessageEncoder(RiderIdentity(racer_id=101, name="Ada", class_id=2))
    made = []
    for i in range(count):
        uuid = uuid4(rng)
        made.append(
            (
                uuid,
                encoder.encode(uuid, "update", 1764186600000 + i * 1000, i % 300 + 1, 5880622,
                               round(rng.uniform(60, 99), 1), round(rng.uniform(20, 60), 1)),
            )
        )  # fmt: skip
    return made


def filled(path: Path, count: int, *, reserve: int = 3600, snapshot: Path | None = None) -> None:
    """A spool holding ``count`` messages; its files copied to ``snapshot`` while open."""
    spool = Spool(path, reserve=reserve)
    for uuid, payload in payloads(count):
        spool.append(uuid, payload, durable=False)
    if snapshot is not None:
        for suffix in ("", "-wal"):
            shutil.copyfile(path.with_name(path.name + suffix), f"{snapshot}{suffix}")
    spool.close()


def timed_open(path: Path) -> tuple[float, Spool, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    started = time.perf_counter()
    spool = Spool(path, report=lambda level, message, **fields: events.append(fields))
    return time.perf_counter() - started, spool, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=86_400, help="messages in the sound spool")
    parser.add_argument("--damaged", type=int, default=300, help="messages in a damaged spool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        seconds, spool, _ = timed_open(root / "new.db")
        print(f"new spool, reserve written: {seconds * 1000:7.1f} ms, {spool.reserved:,} bytes")
        spool.close()
        filled(root / "full.db", args.messages)
        seconds, spool, _ = timed_open(root / "full.db")
        print(f"sound spool of {spool.depth:,} messages: {seconds * 1000:7.1f} ms "
              f"({(root / 'full.db').stat().st_size:,} bytes)")  # fmt: skip
        spool.close()
        filled(root / "live-killed.db", 900, snapshot=root / "killed.db")
        seconds, spool, _ = timed_open(root / "killed.db")
        print(f"spool killed with {spool.depth} messages in its log: {seconds * 1000:7.1f} ms")
        spool.close()
        for kind in KINDS:
            path = root / f"{kind.replace(' ', '-')}.db"
            in_database = "database" in kind
            # A closed spool has its messages in the database file; a killed one, in its log.
            # The database case has no reserve, so its messages fill the file from its start.
            if in_database:
                filled(path, args.damaged, reserve=0)
            else:
                filled(root / f"live-{path.name}", args.damaged, snapshot=path)
            damage(path, kind)
            seconds, spool, events = timed_open(path)
            fields = events[0] if events else {"recovered": 0, "unreadable": 0}
            recovered, unreadable = fields["recovered"], fields["unreadable"]
            print(f"{kind:27}: {seconds * 1000:7.1f} ms, {spool.depth:4} of {args.damaged} "
                  f"spooled, {recovered:4} recovered, {unreadable} unreadable")  # fmt: skip
            spool.close()


if __name__ == "__main__":
    main()
