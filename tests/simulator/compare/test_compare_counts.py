"""compare's closing line counts in words that agree with their numbers."""

from __future__ import annotations

from click.testing import CliRunner

from alleycat.cli import cli


def test_one_of_each_reads_in_the_singular() -> None:
    result = CliRunner().invoke(
        cli,
        ["compare", "--riders", "1", "--shards", "1", "--duration", "5", "--strategies",
         "random", "--jobs", "1"],
        terminal_width=200,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Ran 1 strategy × 1 rider × 5 s (5 messages each) on 1 shard, seed 1, in 1 process" in (
        " ".join(result.stdout.split())
    )
