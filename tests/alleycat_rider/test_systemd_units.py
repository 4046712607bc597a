"""The systemd units the docs give: a single bike's, and the studio's template, kept in step."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def unit(page: str, name: str) -> str:
    """The unit file ``name`` as the page shows it (its first line names the file)."""
    text = (DOCS / page).read_text()
    found = re.search(rf"```ini\n(# /etc/systemd/system/{re.escape(name)}\n.*?)```", text, re.S)
    assert found, f"{page} shows no {name}"
    return found.group(1)


def settings(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )


SINGLE = ("ride.md", "alleycat-rider.service")
STUDIO = ("sensors.md", "alleycat-rider@.service")


def test_the_studio_template_differs_from_the_single_unit_only_in_what_is_the_bikes_own() -> None:
    single, studio = settings(unit(*SINGLE)), settings(unit(*STUDIO))

    differing = {key for key in single.keys() | studio.keys() if single.get(key) != studio.get(key)}

    assert differing == {
        "Description", "Wants", "After", "SupplementaryGroups", "ExecStart", "StateDirectory",
    }  # fmt: skip
    assert studio["StateDirectory"] == "alleycat/%i"
    assert "--sensor keiser --keiser-id %i" in studio["ExecStart"]
    assert "--config /etc/alleycat/rider-%i.toml" in studio["ExecStart"]
    assert "--spool" not in studio["ExecStart"]  # the spool's home is the instance's directory
    assert "bluetooth.service" in studio["After"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize(("page", "name", "instance"), [(*SINGLE, ""), (*STUDIO, "7")])
def test_systemd_accepts_the_units(tmp_path: Path, page: str, name: str, instance: str) -> None:
    # The agent is not installed at /opt/alleycat here; systemd checks the executable exists.
    text = unit(page, name).replace("/opt/alleycat/bin/alleycat", "/bin/echo")
    (tmp_path / name).write_text(text)
    checked = tmp_path / name.replace("@.", f"@{instance}.")

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(checked)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
