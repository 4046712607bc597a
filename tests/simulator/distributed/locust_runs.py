"""Running ``alleycat locust`` processes in tests: each in its own process group, all stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from simulator.verify.cli import verify
from tests.servers.ports import free_port

ALLEYCAT = [sys.executable, "-m", "alleycat", "locust"]


class LocustProcesses:
    """``alleycat locust`` processes started by one test; every one is killed at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``alleycat locust ARGS`` (its output in ``logs/name.out`` and ``.err``)."""
        with (
            (self.logs / f"{name}.out").open("wb") as out,
            (self.logs / f"{name}.err").open("wb") as err,
        ):
            process = subprocess.Popen(
                [*ALLEYCAT, *args],
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own group: --processes children die with it
            )
        self.started.append(process)
        return process

    def output(self, name: str) -> str:
        return (self.logs / f"{name}.err").read_text(errors="replace")

    def wait(self, process: subprocess.Popen[bytes], name: str, timeout: float = 120) -> int:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not end:\n{self.output(name)[-3000:]}") from None

    def master_and_workers(self, *args: str, workers: int = 2) -> subprocess.Popen[bytes]:
        """A headless master on a free loopback port, given ``args``, and ``workers`` workers
        started apart (``worker-a``, ``worker-b``, ...); returns the master."""
        port = str(free_port())
        master = self.start(
            "master",
            *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port),
            *("--headless", "--expect-workers", str(workers), *args),
        )
        for name in (f"worker-{chr(ord('a') + i)}" for i in range(workers)):
            self.start(name, "--worker", "--master-host", "127.0.0.1", "--master-port", port)
        return master

    def kill_all(self) -> None:
        for process in self.started:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


@contextmanager
def locust_processes(logs: Path) -> Iterator[LocustProcesses]:
    """Yield a :class:`LocustProcesses`; its processes (and their children) are killed after."""
    processes = LocustProcesses(logs)
    try:
        yield processes
    finally:
        processes.kill_all()


def fleet_args(endpoint: str, stream: str, *more: str) -> list[str]:
    return ["--stream", stream, "--endpoint-url", endpoint, *more]


def read_summary(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text())
    return summary


def verify_json(endpoint: str, stream: str, *more: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        verify, ["--stream", stream, "--endpoint-url", endpoint, "--json", *more]
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def locust_rows(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Locust's ``--json-file`` statistics by (request type, name)."""
    return {
        (row["method"], row["name"]): row
        for row in json.loads(path.with_suffix(".json").read_text())
    }
