"""The README as a front page, and the documentation site under docs/ that holds the rest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alleycat.cli import COMMANDS
from tests.test_fresh_machine import INSTALL_PAGE, first_command, fresh_machine_commands

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_readme_gives_the_two_commands_the_fresh_machine_test_and_ci_run() -> None:
    readme = fresh_machine_commands(README)
    assert readme == fresh_machine_commands(INSTALL_PAGE)
    assert readme == [first_command(), "scripts/test"]
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "exec scripts/test"


def test_the_readme_is_a_front_page_whose_links_into_the_docs_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    targets = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#[^)\s]*)?\)", text)
    assert any(target.startswith("docs/") for target in targets)
    assert [t for t in targets if not (ROOT / t).is_file()] == []
    assert "pip install '.[docs]' && mkdocs serve" in text


def test_the_commands_page_lists_every_command_with_its_own_summary() -> None:
    page = (ROOT / "docs" / "reference" / "commands.md").read_text()
    rows = dict(re.findall(r"^\| `alleycat ([a-z]+)` \| (.+?) \|", page, re.MULTILINE))
    # What `alleycat --help` shows for each command.
    assert rows == {name: summary for name, (_, summary) in COMMANDS.items()}


def build(project: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(project / "out")],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def docs_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the documentation sources, checked to build cleanly as they are."""
    sources = tmp_path_factory.mktemp("docs-sources")
    shutil.copytree(ROOT / "docs", sources / "docs")
    shutil.copy(ROOT / "mkdocs.yml", sources / "mkdocs.yml")
    clean = build(sources)
    assert clean.returncode == 0, clean.stderr
    assert "WARNING" not in clean.stderr
    return sources


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# Four site builds: run once, with the end-to-end tests (they do not touch compiled code).
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("breakage", "complaint"),
    [
        ("link", "'nowhere.md', but the target is not found"),
        ("anchor", "does not contain an anchor '#no-such-heading'"),
        ("page", 'not included in the "nav" configuration'),
    ],
)
def test_the_strict_build_fails_on_a_broken_link_a_missing_heading_or_a_page_off_the_nav(
    docs_sources: Path, tmp_path: Path, breakage: str, complaint: str
) -> None:
    copy = tmp_path / "site"
    shutil.copytree(docs_sources, copy, ignore=shutil.ignore_patterns("out"))
    index = copy / "docs" / "index.md"
    if breakage == "link":
        append(index, "\nSee [nowhere](nowhere.md).\n")
    elif breakage == "anchor":
        append(index, "\nSee [a heading](simulate.md#no-such-heading).\n")
    else:
        (copy / "docs" / "orphan.md").write_text("# A page no one can reach\n")
    broken = build(copy)
    assert broken.returncode != 0
    assert complaint in broken.stderr
