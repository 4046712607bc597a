"""The HTML reports opened as a user opens them: from disk, in Chromium, with no network.

A fixture starts the system's Chromium (/usr/bin/chromium) headless through Playwright, with a
fresh profile, and stops it after the module's tests (and checks that it is gone). Each page must
load with nothing on the console and no request but the file itself, draw every chart (the plot
areas of a screenshot are not blank), and hold in its tables, its embedded JSON and its charts'
data the very figures ``--json`` printed for the same run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner
from PIL import Image, ImageChops
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from alleycat.cli import cli
from tests.simulator.distributed.locust_runs import locust_processes, read_summary
from tests.simulator.report.pages import ReportPage, mismatches

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
#: Chromium as root in a container, headless, and quiet: no background requests of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
]


def chromium_processes() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "chrom" in p.name() and p.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    assert chromium_processes() == []
    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh, temporary profile (its --user-data-dir).
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        assert chromium_processes() != []
        try:
            yield chromium
        finally:
            chromium.close()
    psutil.wait_procs(chromium_processes(), timeout=10)
    assert chromium_processes() == []


@dataclass
class Opened:
    """A report open in the browser, and what the browser saw while it loaded."""

    page: Page
    url: str
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def chart_data(self, chart_id: str) -> list[dict[str, Any]]:
        """The traces plotly drew in chart ``chart_id``, as the page holds them."""
        data: list[dict[str, Any]] = self.page.evaluate(
            "id => document.getElementById(id).data.map(t => ({name: t.name, x: t.x, y: t.y,"
            " z: t.z}))",
            chart_id,
        )
        return data

    def drawn_share(self, chart_id: str) -> list[float]:
        """For each plot area of a chart: the share of its pixels its data draws.

        The area is shot as the page shows it, then again with every trace hidden (the same
        axes, grid and background): the pixels that differ are what the data drew.
        """
        areas = self.page.locator(f'[data-chart="{chart_id}"] rect.nsewdrag')
        shown = [self._shot(areas.nth(i)) for i in range(areas.count())]
        self.page.evaluate("id => Plotly.restyle(id, {visible: false})", chart_id)
        hidden = [self._shot(areas.nth(i)) for i in range(areas.count())]
        self.page.evaluate("id => Plotly.restyle(id, {visible: true})", chart_id)
        shares = []
        for drawn, blank in zip(shown, hidden, strict=True):
            changed = ImageChops.difference(drawn, blank).convert("L").point(lambda v: v > 0)
            shares.append(changed.histogram()[1] / (drawn.width * drawn.height))
        return shares

    @staticmethod
    def _shot(area: Locator) -> Image.Image:
        area.scroll_into_view_if_needed()
        box = area.bounding_box()
        assert box is not None and box["width"] > 50 and box["height"] > 50
        return Image.open(io.BytesIO(area.screenshot())).convert("RGB")


def open_report(browser: Browser, path: Path) -> Opened:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    opened = Opened(page, path.as_uri())
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("console", lambda message: opened.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: opened.console.append(f"pageerror: {error}"))
    page.goto(opened.url, wait_until="load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-chart] .js-plotly-plot')]"
        ".every(d => d._fullLayout && d.querySelector('.main-svg'))"
    )
    return opened


def assert_opened_offline_and_quietly(opened: Opened) -> None:
    assert opened.requests == [opened.url]
    assert opened.console == []


def assert_tables_and_json_are(opened: Opened, path: Path, figures: dict[str, Any]) -> None:
    shown = json.loads(opened.page.locator("#alleycat-figures").text_content() or "")
    assert shown == figures
    assert mismatches(ReportPage(path.read_text()), figures) == {}
    # What the browser renders, not only the file's text.
    for cell in opened.page.locator("td[data-key]").all()[:40]:
        key = cell.get_attribute("data-key") or ""
        page_cell = ReportPage(path.read_text()).cells[key]
        assert cell.inner_text().strip() == page_cell.strip()


def cli_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def test_the_simulate_report_draws_the_run_second_by_second_with_the_json_figures(
    browser: Browser, tmp_path: Path
):
    path = tmp_path / "simulate.html"
    summary = cli_json(
        "simulate", "--riders", "1500", "--shards", "2", "--duration", "30", "--fast",
        "--partition-key", "class", "--json", "--html", str(path),
    )  # fmt: skip
    assert summary["throttled"] > 0  # `class` pins big classes to one shard: it throttles
    opened = open_report(browser, path)
    assert_opened_offline_and_quietly(opened)
    assert_tables_and_json_are(opened, path, summary)

    rates = {trace["name"]: trace["y"] for trace in opened.chart_data("rates")}
    assert sum(rates["generated"]) == summary["generated"]
    assert sum(rates["accepted"]) == summary["delivered"]
    assert sum(rates["throttled"]) == summary["throttled"]
    (heat,) = opened.chart_data("shard-heat-map")
    by_shard = dict(zip(heat["y"], heat["z"], strict=True))
    for shard in summary["shards"]:
        assert sum(by_shard[shard["shard_id"]]) == shard["records"]
        assert max(by_shard[shard["shard_id"]]) == shard["peak_records_per_s"]
    (curve,) = opened.chart_data("latency")
    assert curve["x"][50] == summary["latency_ms"]["p50"]
    assert curve["x"][99] == summary["latency_ms"]["p99"]

    assert min(opened.drawn_share("shard-heat-map")) > 0.5
    for chart_id in ("rates", "p99", "latency"):
        assert min(opened.drawn_share(chart_id)) > 0.003, chart_id
    opened.page.context.close()


def test_the_compare_report_puts_each_strategys_heat_map_side_by_side(
    browser: Browser, tmp_path: Path
):
    path = tmp_path / "compare.html"
    report = cli_json(
        "compare", "--riders", "1200", "--shards", "4", "--duration", "30", "--phase-spread",
        "0", "--jobs", "1", "--format", "json", "--html", str(path),
    )  # fmt: skip
    opened = open_report(browser, path)
    assert_opened_offline_and_quietly(opened)
    assert_tables_and_json_are(opened, path, report)
    recommendation = opened.page.locator('[data-key="recommendation"]').inner_text()
    assert recommendation.endswith(report["recommendation"])

    heat_maps = opened.chart_data("shard-heat-maps")
    assert len(heat_maps) == len(report["runs"]) == 5
    for trace, run in zip(heat_maps, report["runs"], strict=True):
        peaks = [max(row) for row in trace["z"]]  # shard × second
        assert peaks == run["peak_offered_per_s"]
    curves = {trace["name"]: trace["x"] for trace in opened.chart_data("latency")}
    costs = {trace["name"]: trace["y"] for trace in opened.chart_data("costs")}
    for run in report["runs"]:
        assert curves[run["strategy"]][50] == run["latency_p50_ms"]
        assert curves[run["strategy"]][99] == run["latency_p99_ms"]
    assert costs["provisioned"] == [run["cost"]["provisioned"] for run in report["runs"]]
    assert costs["on-demand"] == [run["cost"]["on_demand"] for run in report["runs"]]

    shares = opened.drawn_share("shard-heat-maps")
    assert len(shares) == 5 and min(shares) > 0.5
    assert min(opened.drawn_share("latency")) > 0.003
    assert min(opened.drawn_share("costs")) > 0.05
    opened.page.context.close()


def test_the_compare_report_of_batching_modes_and_of_ingestion_paths(
    browser: Browser, tmp_path: Path
):
    for how, count in ((["--batching"], 3), (["--ingest", "sdk,iot-rule"], 2)):
        path = tmp_path / f"{how[0].strip('-')}.html"
        report = cli_json(
            "compare", "--riders", "600", "--shards", "2", "--duration", "20", "--jobs", "1",
            "--format", "json", "--html", str(path), *how,
        )  # fmt: skip
        opened = open_report(browser, path)
        assert_opened_offline_and_quietly(opened)
        assert_tables_and_json_are(opened, path, report)
        assert len(opened.chart_data("shard-heat-maps")) == count
        costs = {trace["name"]: trace["y"] for trace in opened.chart_data("costs")}
        if how[0] == "--ingest":
            stream = [run["stream_cost"]["provisioned"] for run in report["runs"]]
            assert costs == {
                "stream (provisioned)": stream,
                "IoT Core": [run["iot_cost"]["total"] for run in report["runs"]],
            }
        else:
            assert costs["provisioned"] == [run["cost"]["provisioned"] for run in report["runs"]]
        assert min(opened.drawn_share("shard-heat-maps")) > 0.5
        assert min(opened.drawn_share("costs")) > 0.05
        opened.page.context.close()


def test_the_locust_master_writes_its_summary_as_a_page(browser: Browser, tmp_path: Path):
    summary_file, path = tmp_path / "summary.json", tmp_path / "locust.html"
    with locust_processes(tmp_path) as locust:
        master = locust.master_and_workers(
            *("-u", "40", "-r", "40", "-t", "4s", "--riders-per-user", "10"),
            *("--summary-json", str(summary_file), "--summary-html", str(path)),
        )
        assert locust.wait(master, "master") == 0, locust.output("master")[-3000:]
        assert f"wrote the HTML report to {path}" in locust.output("master")
    summary = read_summary(summary_file)
    assert summary["delivered"] > 0
    opened = open_report(browser, path)
    assert_opened_offline_and_quietly(opened)
    assert_tables_and_json_are(opened, path, summary)
    (records,) = opened.chart_data("shard-records")
    assert records["y"] == [s["records"] for s in summary["shards"]]
    (peaks,) = opened.chart_data("shard-peaks")
    assert peaks["y"] == [s["peak_records_per_s"] for s in summary["shards"]]
    workers = {trace["name"]: trace["y"] for trace in opened.chart_data("workers")}
    assert workers["delivered"] == [w["delivered"] for w in summary["workers"]]
    for chart_id in ("shard-records", "shard-peaks", "workers", "latency"):
        assert min(opened.drawn_share(chart_id)) > 0.05, chart_id
    opened.page.context.close()
