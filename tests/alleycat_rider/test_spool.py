"""The QoS 1 spool: ordered, bounded, and still there after the process is killed."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from alleycat_rider.errors import SpoolError
from alleycat_rider.spool import Spool


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
    with Spool(tmp_path / "spool.db") as spool:
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
        "from alleycat_rider.spool import Spool\n"
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
        "from alleycat_rider.spool import Spool\n"
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
