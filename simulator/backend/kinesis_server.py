"""The local Kinesis server of ``alleycat stack``: moto's server or kinesalite, as a subprocess
on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from alleycat_rider.iot.broker import LOCALHOST
from simulator.errors import SimulatorError


class StackError(SimulatorError):
    """Part of the stack cannot start; the message says what to do."""


@dataclass(slots=True)
class KinesisServer:
    """moto's server or kinesalite, as a subprocess on 127.0.0.1."""

    kind: str
    port: int
    log: IO[bytes]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        """The command line, or :class:`StackError` saying what to install."""
        if self.kind == "moto":
            try:
                import moto.server  # noqa: F401
            except ImportError:
                raise StackError(
                    "moto's server is not installed: pip install 'alleycat[stack]' "
                    "(or --kinesis kinesalite)"
                ) from None
            return [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(self.port)]
        node = shutil.which("node")
        if node is None:
            raise StackError("--kinesis kinesalite needs Node.js: install nodejs, or use moto")
        module = _kinesalite_module()
        script = (
            f"const k = require({str(module)!r})({{createStreamMs: 50, deleteStreamMs: 50,"
            f" updateStreamMs: 50, shardLimit: 100}});"
            f" k.listen({self.port}, '{LOCALHOST}');"
            " process.on('SIGTERM', () => k.close(() => process.exit(0)));"
        )
        return [node, "-e", script]

    def start(self, timeout: float = 30.0) -> None:
        from simulator.backend.net import wait_for_port

        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        if not wait_for_port(LOCALHOST, self.port, timeout, alive=self.process):
            self.stop()
            raise StackError(f"{self.kind} did not start listening on {self.port}: see its log")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _kinesalite_module() -> Path:
    """Where npm installed kinesalite: next to us, or globally."""
    candidates = []
    npm = shutil.which("npm")
    if npm is not None:
        try:
            root = subprocess.run(
                [npm, "root", "-g"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
            candidates.append(Path(root) / "kinesalite")
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.append(Path.cwd() / "node_modules" / "kinesalite")
    for candidate in candidates:
        if (candidate / "package.json").is_file():
            return candidate
    raise StackError("kinesalite is not installed: npm install -g kinesalite (or use moto)")
