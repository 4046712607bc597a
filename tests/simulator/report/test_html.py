"""``--html``: one page holding the very figures ``--json`` prints, written beside the usual output.

The pages are opened in a real browser by test_html_browser.py; here they are read as text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from alleycat.cli import cli
from tests.simulator.report.pages import ReportPage, mismatches


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_simulate_html_holds_the_json_figures_and_shows_each_as_it_is(tmp_path: Path):
    path = tmp_path / "run.html"
    code, out, err = run(
        "simulate", "--riders", "1200", "--shards", "1", "--duration", "20", "--fast", "--json",
        "--html", str(path),
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert f"wrote the HTML report to {path}" in err
    page = ReportPage(path.read_text())
    assert page.figures == summary
    assert summary["throttled"] > 0
    shown = ["generated", "delivered", "throttled", "dropped", "latency_ms.p99"]
    shown += ["shards.0.records", "shards.0.peak_records_per_s", "records_per_wall_second"]
    assert set(shown) <= set(page.cells)
    assert mismatches(page, summary) == {}
    assert page.external == []  # no script, style or image from anywhere else


def test_the_terminal_stays_the_default_and_html_only_adds_a_file(tmp_path: Path):
    path = tmp_path / "run.html"
    code, out, err = run(
        "simulate", "--riders", "100", "--duration", "5", "--fast", "--no-dashboard",
        "--html", str(path),
    )  # fmt: skip
    assert code == 0, err
    assert "Run summary" in out  # the table, as without --html
    assert path.stat().st_size > 1_000_000  # plotly's script is in the page
    assert err.strip().splitlines()[-1].startswith(f"wrote the HTML report to {path} (")


@pytest.mark.parametrize(
    "how",
    [
        ["--strategies", "time,balanced", "--phase-spread", "0"],
        ["--batching"],
        ["--ingest", "sdk,iot-rule", "--phase-spread", "0"],
        ["--capacity", "provisioned:2,on-demand", "--phase-spread", "0"],
    ],
    ids=["strategies", "batching", "ingest", "capacity"],
)
def test_compare_html_holds_the_json_figures_and_the_recommendation(tmp_path: Path, how: list[str]):
    path = tmp_path / "compare.html"
    code, out, err = run(
        "compare", "--riders", "600", "--shards", "2", "--duration", "20", "--jobs", "1",
        "--format", "json", "--html", str(path), *how,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    page = ReportPage(path.read_text())
    assert page.figures == report
    assert page.cells["recommendation"].strip().endswith(report["recommendation"])
    assert "runs.1.verdict" in page.cells and "runs.1.latency_p99_ms" in page.cells
    assert mismatches(page, report) == {}
    assert page.external == []
    # The JSON stays as it was: the series are in the page's charts only.
    assert "offered_per_second" not in report["runs"][0]
    assert "latency_curve" not in report["runs"][0]


def test_compare_csv_keeps_its_columns_with_html(tmp_path: Path):
    args = ["compare", "--riders", "100", "--duration", "5", "--strategies", "racer", "--jobs", "1"]
    _, plain, _ = run(*args, "--format", "csv")
    code, with_html, err = run(*args, "--format", "csv", "--html", str(tmp_path / "c.html"))
    assert code == 0, err
    assert with_html.splitlines()[0] == plain.splitlines()[0]
    assert "offered_per_second" not in with_html and "latency_curve" not in with_html


@pytest.mark.parametrize("command", [["simulate", "--fast"], ["compare"]])
def test_html_without_plotly_is_one_line_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
):
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly fails, as if not installed
    path = tmp_path / "r.html"
    code, out, err = run(*command, "--html", str(path))
    assert code == 2
    assert out == ""
    assert err == "Error: --html needs plotly: pip install 'alleycat[report]'\n"
    assert not path.exists()


def test_html_into_a_missing_folder_is_a_usage_error_before_the_run(tmp_path: Path):
    missing = tmp_path / "no" / "such" / "r.html"
    code, out, err = run("simulate", "--fast", "--html", str(missing))
    assert code == 2
    assert err.startswith("Error: Invalid value for '--html': ")
    assert "there is no folder" in err and len(err.splitlines()) == 1


def test_html_is_refused_for_the_mqtt_fleet(tmp_path: Path):
    code, _, err = run("simulate", "--via", "mqtt", "--html", str(tmp_path / "r.html"))
    assert code == 2
    assert "--html reports runs into Kinesis; not with --via mqtt" in err
