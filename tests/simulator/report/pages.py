"""Reading an HTML report back: its JSON figures, the figures its tables show, what it loads."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from typing import Any


class ReportPage(HTMLParser):
    """The parts of a report page the tests check."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: dict[str, str] = {}
        self.figures_json = ""
        self.external: list[str] = []
        self._key: str | None = None
        self._in_figures = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "data-key" in found:
            self._key = found["data-key"]
            self.cells[self._key or ""] = ""
        if tag == "script" and found.get("id") == "alleycat-figures":
            self._in_figures = True
        for name in ("src", "href"):
            if found.get(name):
                self.external.append(f"{tag} {name}={found[name]}")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "p"):
            self._key = None
        if tag == "script":
            self._in_figures = False

    def handle_data(self, data: str) -> None:
        if self._in_figures:
            self.figures_json += data
        if self._key is not None:
            self.cells[self._key] += data

    @property
    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = json.loads(self.figures_json)
        return figures


def value_at(figures: dict[str, Any], key: str) -> Any:
    """The value at a dotted ``data-key`` path (``runs.2.cost.provisioned``)."""
    value: Any = figures
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def shown_as(text: str, value: Any) -> bool:
    """Whether a cell's text is the JSON value, as the page formats it."""
    text = text.strip()
    if isinstance(value, bool):
        return text == ("yes" if value else "no")
    if isinstance(value, (int, float)):
        shown = float(text.replace(",", ""))
        return shown == value or math.isclose(shown, value, rel_tol=1e-12)
    if value is None:
        return text == "none"
    return text.endswith(str(value))  # the recommendation follows its label


def mismatches(page: ReportPage, figures: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Every table cell whose text is not its JSON value."""
    return {
        key: (text, value_at(figures, key))
        for key, text in page.cells.items()
        if not shown_as(text, value_at(figures, key))
    }
