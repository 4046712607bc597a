"""Every command's --help teaches with examples, and every example is a command line it takes."""

from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner

from alleycat.cli import COMMANDS, cli

#: Every command users run, subcommands of groups included (``locust --help`` is Locust's own).
COMMAND_LINES = [[name] for name in sorted(set(COMMANDS) - {"certs", "locust"})] + [
    ["certs", "dev"]
]


def examples(help_text: str) -> list[list[str]]:
    """The ``alleycat ...`` lines under ``Examples:``, as words (comments dropped)."""
    _, found, after = help_text.partition("Examples:")
    assert found, "no Examples: section"
    lines = [line.strip() for line in after.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("alleycat ")]


@pytest.mark.parametrize("words", COMMAND_LINES, ids=" ".join)
def test_help_has_examples_that_its_command_takes(words: list[str]) -> None:
    result = CliRunner().invoke(cli, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0
    found = examples(result.output)
    assert found and all(example[1 : 1 + len(words)] == words for example in found)
    group = click.Context(cli)
    command = cli.get_command(group, words[0])
    assert command is not None
    for name in words[1:]:
        assert isinstance(command, click.Group)
        command = command.get_command(group, name)
        assert command is not None
    for example in found:
        try:  # options and their values as the command reads them, without running it
            command.make_context(" ".join(words), example[1 + len(words) :])
        except click.BadParameter as exc:
            # A file an example names need not exist here; anything else is a wrong example.
            assert "does not exist" in str(exc), f"{shlex.join(example)}: {exc}"
