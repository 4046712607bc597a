"""The first of the two commands on a fresh machine, run as a fresh machine runs it.

The command is read from the documentation's install page, where the README's copy is checked
against it (tests/test_docs.py).

Debian's and Ubuntu's Python refuse ``pip install`` outside a virtual environment
(``externally-managed-environment``); ``PIP_REQUIRE_VIRTUALENV=1`` makes any pip refuse the same
way, so the command must make and use one of its own. It runs on a copy of the tracked tree,
with a home of its own (no pip cache, no config), as a user who just cloned the repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

#: Installs the package from the package index: minutes, not seconds. Run once.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


#: The page that says how to install Alleycat and run its tests.
INSTALL_PAGE = ROOT / "docs" / "install.md"


def fresh_machine_commands(page: Path) -> list[str]:
    """The ```sh blocks under a page's "Two commands on a fresh machine", in order."""
    text = page.read_text()
    assert "## Two commands on a fresh machine" in text, f"no such section in {page}"
    section = text.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.+?)\n```", section, re.DOTALL)]


def first_command() -> str:
    """The first of the two commands: install, then ride a race."""
    commands = fresh_machine_commands(INSTALL_PAGE)
    assert commands, "no ```sh block in the section"
    command = commands[0]
    assert "\n" not in command, "one command, one line"
    return command


def copy_of_the_checkout(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    packed = subprocess.run(
        ["tar", "--null", "-T", "-", "--ignore-failed-read", "-cf", "-"],
        cwd=ROOT, input=files, capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-xf", "-"], cwd=target, input=packed, check=True)


def test_the_first_command_installs_and_rides_where_pip_refuses_to_install_outside_a_venv(
    tmp_path: Path,
) -> None:
    command = first_command()
    assert command.startswith("python3 -m venv .venv && ")
    assert command.endswith("alleycat simulate --riders 1000")
    checkout = tmp_path / "alleycat"
    checkout.mkdir()
    copy_of_the_checkout(checkout)
    home = tmp_path / "home"
    home.mkdir()
    # The machine's own pip settings (its index, its certificates) stay; nothing of ours does.
    # Two shortcuts keep this test to a minute: downloads come from this user's pip cache (the
    # same files the index serves), and the hot path is not compiled (ALLEYCAT_PURE_PYTHON:
    # the compiled build has a test run of its own, scripts/test's second pass).
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("LANG", "TZ")}
    env.update(
        PATH="/usr/local/bin:/usr/bin:/bin",
        HOME=str(home),
        PIP_REQUIRE_VIRTUALENV="1",
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        ALLEYCAT_PURE_PYTHON="1",
    )

    refused = subprocess.run(
        ["python3", "-m", "pip", "install", "--dry-run", "."],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0  # this environment does refuse pip outside a venv

    # The race itself in virtual time: the same 1,000 riders and five minutes, in seconds.
    ran = subprocess.run(
        ["bash", "-c", f"{command} --fast --json"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout.splitlines()[-1])  # after pip's own output
    assert summary["generated"] == 1000 * 300
    assert summary["delivered"] + summary["dropped"] == summary["generated"]
    assert (checkout / ".venv" / "bin" / "alleycat").exists()
