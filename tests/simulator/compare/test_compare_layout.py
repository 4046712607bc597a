import pytest
from click.testing import CliRunner

from alleycat.cli import cli


@pytest.mark.parametrize("extra", [[], ["--batching"], ["--ingest", "sdk,iot-rule"]])
def test_compare_stays_80_columns_on_a_wide_terminal_and_cuts_no_figure(extra):
    result = CliRunner().invoke(
        cli,
        ["compare", "--riders", "200", "--duration", "20", "--shards", "8", "--jobs", "1", *extra],
        env={"COLUMNS": "160"},
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) == 80
    assert "…" not in result.stdout
    if not extra:
        # Eight shares of about 12% each, wrapped over two lines rather than cut.
        balanced = lines.index(next(line for line in lines if line.startswith("balanced ")))
        shares = lines[balanced].split()[1:5] + lines[balanced + 1].split()
        assert len(shares) == 8 and all(share.isdigit() for share in shares)
        assert "574/998" in lines[balanced]
