"""The QoS 1 spool: ordered, bounded, and still there after the process is killed."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alleycat_rider.agent.spool import Spool
from alleycat_rider.errors import SpoolError


def test_messages_come_back_in_order_with_their_payloads(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        for i in range(5):
            spool.append(f"u{i}", f"payload {i}".encode())
        pending = spool.pending(limit=10)
    assert [m.uuid for m in pending] == [f"u{i}" for i in range(5)]
    assert pending[2].payload == b"payload 2"
    assert [m.seq for m in pending] == sorted(m.seq for m in pending)


def test_acked_messages_leave_the_spool_and_others_stay(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        seqs = [spool.append(f"u{i}", b"x")[0] for i in range(4)]
        assert spool.ack(seqs[1]) is True
        assert spool.ack(seqs[1]) is False
        assert spool.depth == 3
        assert [m.uuid for m in spool.pending()] == ["u0", "u2", "u3"]
        assert [m.uuid for m in spool.pending(after=seqs[2])] == ["u3"]
        assert [m.uuid for m in spool.get([seqs[3], seqs[1], seqs[0]])] == ["u0", "u3"]


def test_numbers_of_acknowledged_messages_are_not_handed_out_again(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        seqs = [spool.append(f"u{i}", b"x")[0] for i in range(3)]
        for seq in reversed(seqs):  # the newest first: the table ends up empty
            spool.ack(seq)
        seq, _ = spool.append("u3", b"x")
        assert seq > max(seqs)
        assert spool.ack(seqs[-1]) is False  # a late PUBACK does not remove the new message
        assert [m.uuid for m in spool.pending()] == ["u3"]


def test_an_append_on_a_healthy_link_writes_one_small_page(tmp_path: Path) -> None:
    wal = tmp_path / "spool.db-wal"
    with Spool(tmp_path / "spool.db", reserve=0) as spool:  # the log grows: it is not reserved
        seq, _ = spool.append("u0", b"x" * 250, durable=False)
        before = wal.stat().st_size
        for i in range(1, 11):  # acknowledged, then removed with the next append
            spool.ack(seq)
            seq, _ = spool.append(f"u{i}", b"x" * 250, durable=False)
        # One WAL frame per append: a 24-byte header and a 1 KB page.
        assert wal.stat().st_size - before == 10 * (24 + 1024)


def test_a_spool_made_with_autoincrement_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL, "
            "payload BLOB NOT NULL)"
        )
        db.execute("INSERT INTO messages (uuid, payload) VALUES ('u0', x'00')")
    db.close()
    with Spool(path) as spool:
        seq, _ = spool.append("u1", b"x")
        assert seq == 2
        assert [m.uuid for m in spool.pending()] == ["u0", "u1"]
    with Spool(path) as spool:
        assert [m.seq for m in spool.pending()] == [1, 2]


def test_a_reopened_spool_keeps_messages_and_the_dropped_count(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, max_messages=3) as spool:
        for i in range(5):
            spool.append(f"u{i}", b"x")
    with Spool(path, max_messages=3) as spool:
        assert spool.depth == 3
        assert spool.dropped == 2
        seq, dropped = spool.append("u5", b"x")
        assert dropped == 1
        assert [m.uuid for m in spool.pending()] == ["u3", "u4", "u5"]
        assert spool.dropped == 3
        assert seq > max(m.seq for m in spool.pending(limit=2))


def test_the_spool_uses_write_ahead_logging(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    Spool(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_appended_messages_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from alleycat_rider.agent.spool import Spool\n"
        f"spool = Spool(Path({str(path)!r}))\n"
        "for i in range(20):\n"
        "    spool.append(f'u{i}', b'payload')\n"
        "print('appended', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert _run_until_first_line_then_kill(script) == b"appended\n"
    with Spool(path) as spool:
        assert [m.uuid for m in spool.pending(limit=100)] == [f"u{i}" for i in range(20)]


def test_a_removal_is_committed_with_the_next_append_so_a_kill_only_causes_a_resend(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    script = (
        "from pathlib import Path\n"
        "from alleycat_rider.agent.spool import Spool\n"
        f"spool = Spool(Path({str(path)!r}))\n"
        "seqs = [spool.append(f'u{i}', b'payload')[0] for i in range(3)]\n"
        "assert spool.ack(seqs[0]) and not spool.ack(seqs[0])\n"
        "spool.append('u3', b'payload', durable=True)\n"  # commits the removal of u0
        "assert spool.ack(seqs[1])\n"  # not committed before the kill
        "print('acked', spool.depth, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    assert _run_until_first_line_then_kill(script) == b"acked 2\n"
    with Spool(path) as spool:
        # u1 was acknowledged but its removal died with the process: sent again, not lost.
        assert [m.uuid for m in spool.pending()] == ["u1", "u2", "u3"]
        assert spool.depth == 3


def test_closing_the_spool_commits_the_last_removals(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path) as spool:
        seqs = [spool.append(f"u{i}", b"x")[0] for i in range(3)]
        spool.ack(seqs[2])
    with Spool(path) as spool:
        assert [m.uuid for m in spool.pending()] == ["u0", "u1"]


def test_a_file_that_is_not_a_spool_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolError, match="spool"):
        Spool(path)


def test_a_spool_in_use_by_another_agent_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db"), pytest.raises(SpoolError, match="in use by another"):
        Spool(tmp_path / "spool.db")


def test_a_spool_must_hold_at_least_one_message(tmp_path: Path) -> None:
    with pytest.raises(SpoolError):
        Spool(tmp_path / "spool.db", max_messages=0)


def _run_until_first_line_then_kill(script: str) -> bytes:
    """Run ``script`` in a fresh Python, read its first line, then SIGKILL it."""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        return process.stdout.readline()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


def _spool_killed_after(path: Path, count: int) -> bytes:
    """Append ``count`` messages in a fresh Python, SIGKILL it; return the WAL left behind."""
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from alleycat_rider.agent.spool import Spool\n"
        f"spool = Spool(Path({str(path)!r}), reserve=0)\n"
        f"for i in range({count}):\n"
        "    spool.append(f'u{i}', b'payload')\n"
        "print('appended', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert _run_until_first_line_then_kill(script) == b"appended\n"
    return path.with_name(path.name + "-wal").read_bytes()


def _frame_offset(index: int) -> int:
    return 32 + index * (24 + 1024)


def test_a_damaged_write_ahead_log_is_reported_and_copied_before_it_is_overwritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    log = bytearray(_spool_killed_after(path, 20))
    # One flipped byte in the page of a frame in the middle of the log.
    log[_frame_offset(10) + 24 + 500] ^= 0x01  # the commit of u1
    path.with_name("spool.db-wal").write_bytes(bytes(log))
    database = path.read_bytes()
    events: list[tuple[str, str, dict[str, object]]] = []
    with Spool(path, report=lambda level, message, **f: events.append((level, message, f))) as s:
        kept = [m.uuid for m in s.pending(limit=100)]
        s.append("u20", b"payload")  # overwrites the log
        assert path.with_name("spool.db-wal").read_bytes() != bytes(log)
        damage = s.damage
    assert kept == ["u0"]  # SQLite dropped the 19 commits after the damage
    assert damage is not None and damage.frame == 10
    assert damage.lost_commits == 19
    [(level, message, fields)] = events
    assert level == "warning"
    assert message.startswith(f"the spool {path} was damaged")
    # These payloads are no ride messages: nothing to recover, nothing unreadable.
    assert "0 messages recovered" in message and "0 messages seen there unreadable" in message
    assert (fields["recovered"], fields["unreadable"], fields["damaged_frames"]) == (0, 0, 1)
    assert fields["copy"] == str(tmp_path / "spool.db.damaged-1")
    # The copies are the damaged files as they were: every lost message can still be dug out.
    assert (tmp_path / "spool.db.damaged-1-wal").read_bytes() == bytes(log)
    assert (tmp_path / "spool.db.damaged-1").read_bytes() == database


def test_a_torn_last_write_is_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    log = _spool_killed_after(path, 5)
    # A crash in the middle of writing the last frame leaves it torn: SQLite rightly drops it.
    path.with_name("spool.db-wal").write_bytes(log[:-500])
    events: list[str] = []
    with Spool(path, report=lambda level, message, **f: events.append(message)) as spool:
        assert spool.damage is None
        assert [m.uuid for m in spool.pending()] == ["u0", "u1", "u2", "u3"]
    assert events == []
    assert not (tmp_path / "spool.db.damaged-1").exists()


def test_a_damaged_log_header_loses_everything_in_the_log_and_is_reported(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    log = bytearray(_spool_killed_after(path, 10))
    log[20] ^= 0x40  # the second salt: SQLite then ignores the whole log
    path.with_name("spool.db-wal").write_bytes(bytes(log))
    with Spool(path) as spool:
        assert spool.pending() == []
        assert spool.damage is not None and spool.damage.lost_commits >= 10


# A full disk, for real: the kernel refuses writes past RLIMIT_FSIZE (EFBIG, or a short write),
# as it refuses them on a full disk (ENOSPC), and SQLite fails the write the same way. The limit
# is set in a child process only, and raised again there to play the disk being freed.
_FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
from typing import Any
from alleycat_rider.agent.spool import Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not the process
path = Path(sys.argv[1])
events = []
spool = Spool(path, memory_max=int(sys.argv[2]), reserve=0,
              report=lambda level, message, **fields: events.append([level, message]))
seqs = [spool.append(f"u{i}", b"payload")[0] for i in range(3)]
spool.ack(seqs[0])
spool.append("u3", b"payload")  # commits the removal of u0
wal = path.with_name(path.name + "-wal")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (wal.stat().st_size, hard))  # the disk is now full
held = [spool.append(f"u{i}", b"payload") for i in range(4, 9)]
spool.ack(seqs[1])  # a removal the disk refuses too
spool.ack(held[0][0])  # acknowledged from memory
full = dict(depth=spool.depth, in_memory=spool.in_memory, unspooled=spool.unspooled,
            refusal=spool.refusal, pending=[m.uuid for m in spool.pending()],
            got=[m.uuid for m in spool.get([seqs[1], seqs[2], held[1][0]])],
            overflow=[o for _, o in held], dropped=spool.dropped, events=list(events))
if sys.argv[3] == "freed":
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed
    spool.append("u9", b"payload")
after = dict(depth=spool.depth, in_memory=spool.in_memory, refusal=spool.refusal)
spool.close()
print(json.dumps(dict(full=full, after=after, events=events)))
"""


def _ride_on_a_full_disk(path: Path, *, memory_max: int, freed: bool) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path), str(memory_max), "freed" if freed else "-"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_a_full_disk_holds_messages_in_memory_warns_once_and_writes_them_when_freed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    found = _ride_on_a_full_disk(path, memory_max=100, freed=True)
    full = found["full"]
    assert full["refusal"] is not None and "disk" in full["refusal"]
    assert full["unspooled"] == 5 and full["in_memory"] == 4  # u4 was acknowledged from memory
    assert full["pending"] == ["u2", "u3", "u5", "u6", "u7", "u8"]  # u1's removal is held too
    assert full["got"] == ["u2", "u5"]
    assert full["depth"] == 6 and full["overflow"] == [0] * 5
    assert [level for level, _ in full["events"]] == ["warning"]  # once, not once a message
    assert "holding new messages in memory" in full["events"][0][1]
    assert found["after"] == {"depth": 7, "in_memory": 0, "refusal": None}
    assert [level for level, _ in found["events"]] == ["warning", "info"]
    with Spool(path) as spool:  # everything held was written, in order, with the removals
        assert [m.uuid for m in spool.pending()] == ["u2", "u3", "u5", "u6", "u7", "u8", "u9"]


def test_messages_held_in_memory_are_bounded_and_a_disk_still_full_at_exit_reports_the_loss(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    found = _ride_on_a_full_disk(path, memory_max=3, freed=False)
    full = found["full"]
    assert full["overflow"] == [0, 0, 0, 1, 1]  # the oldest held are dropped beyond 3
    assert full["dropped"] == 2 and full["in_memory"] == 3  # u4's late PUBACK removes nothing
    assert full["pending"] == ["u2", "u3", "u6", "u7", "u8"]
    levels = [level for level, _ in found["events"]]
    assert levels == ["warning", "error"]
    assert "lost" in found["events"][1][1]
    with Spool(path) as spool:  # what was on disk is kept; the removal of u1 is simply redone
        assert [m.uuid for m in spool.pending()] == ["u1", "u2", "u3"]


# No byte can be written; or the spool can be made, but not the room it reserves on opening.
@pytest.mark.parametrize("limit", [0, 200_000], ids=["created", "reserved"])
def test_a_spool_that_cannot_be_created_on_a_full_disk_never_says_move_it_aside(
    tmp_path: Path, limit: int
) -> None:
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from alleycat_rider.errors import SpoolError\n"
        "from alleycat_rider.agent.spool import Spool\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), hard))\n"
        "try:\n"
        "    Spool(Path(sys.argv[1]))\n"
        "except SpoolError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "spool.db"), str(limit)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    message = result.stdout.strip()
    assert message.startswith(f"cannot use the spool {tmp_path / 'spool.db'}")
    assert "free some space or make it writable" in message and "\n" not in message
    assert "move it aside" not in message


def test_a_file_that_is_not_a_spool_suggests_moving_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SpoolError, match="move it aside"):
        Spool(path)
