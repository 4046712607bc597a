"""Ctrl-C stops a comparison: no table of runs cut short, exit 130 as shells expect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_every_run_and_exits_130(jobs: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "alleycat", "compare", "--riders", "2000", "--duration", "3600",
         "--jobs", jobs],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # the runs are under way: an hour of 2,000 riders takes minutes
        assert process.poll() is None
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C reaches the group
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130
    assert stdout == ""  # no figures of runs cut short
    assert "Traceback" not in stderr
