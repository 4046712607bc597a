"""An endpoint URL without a scheme: one clear line and exit 2, in every command taking one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alleycat_rider.config import check_endpoint_url

COMMANDS = {
    "simulate": ["simulate", "--stream", "rides"],
    "verify": ["verify", "--stream", "rides"],
    "provision": ["provision", "--thing-name", "bike-1", "--racer-id", "1"],
    "rule": ["rule", "--plain"],
    "standings": ["standings", "--plain"],
}


@pytest.mark.parametrize("source", ["flag", "environment"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_scheme_is_one_line_not_a_traceback(
    command: str, source: str, tmp_path: Path
) -> None:
    args = [sys.executable, "-m", "alleycat", *COMMANDS[command]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ALLEYCAT_"))}
    if source == "flag":
        args += ["--endpoint-url", "127.0.0.1:4567"]
    else:
        env["AWS_ENDPOINT_URL"] = "127.0.0.1:4567"
    completed = subprocess.run(
        args, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    # The user is told where the value came from: the flag, or the variable.
    named = "'--endpoint-url'" if source == "flag" else "AWS_ENDPOINT_URL"
    assert completed.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for {named}: '127.0.0.1:4567' is not a URL: write it "
        "with its scheme, e.g. http://127.0.0.1:4567"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:4567", "https://kinesis.eu-west-1.amazonaws.com", "http://localhost"]
)
def test_urls_pass(url: str) -> None:
    assert check_endpoint_url(url) == url


@pytest.mark.parametrize("url", ["127.0.0.1:4567", "ftp://host", "http://", "http://h:port"])
def test_others_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_endpoint_url(url)
