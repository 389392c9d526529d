"""The HTML report in a headless browser: does every chart draw, and what does the page look like.

``python -m reports screenshot RUN --out PNG`` builds the report of a saved run (into a temporary
folder) and writes a PNG of its page; docs/img/report.png is made this way from the committed sample
run. The browser test of the report (tests/test_reports_html.py) opens the page through
:func:`render` too. The browser is Debian's ``chromium`` driven by playwright (no browser download).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from compressors import CompressbenchError

# What each plotly chart of the page drew: its SVG layers, marks (points, lines, fills) and height.
CHARTS_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => {
    const box = d.getBoundingClientRect();
    const marks = d.querySelectorAll('path.point, path.js-line, path.js-fill').length;
    return {id: d.id, svg: d.querySelectorAll('svg.main-svg').length, marks: marks, h: box.height};
})"""


class BrowserUnavailable(CompressbenchError):
    """No chromium on PATH, or the playwright package is not installed."""


@dataclasses.dataclass(frozen=True)
class Rendered:
    """The page as the browser showed it: console and page errors, and each chart's :data:`CHARTS_JS` entry."""

    errors: list[str]
    charts: list[dict]

    @property
    def blank_charts(self) -> list[dict]:
        """Charts that drew nothing visible (no SVG, no marks, or collapsed to 100 px or less)."""
        return [c for c in self.charts if not (c["svg"] and c["marks"] > 0 and c["h"] > 100)]


def chromium() -> str | None:
    """The chromium executable on PATH (Debian calls it ``chromium``, others ``chromium-browser``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, png: Path | None = None, *, width: int = 1280, height: int | None = None,
           interact: Callable | None = None) -> Rendered:
    """Open the report ``page`` in headless chromium, ``width`` CSS pixels wide.

    interact: called with playwright's page after the charts are read (e.g. to click a table header);
        errors it causes are reported too.
    png: where to write a screenshot of the page (after ``interact``), or None for none.
    height: the screenshot's height in CSS pixels from the top of the page, or None for the whole page.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable("the playwright package is not installed: pip install -e '.[bench]'") from exc
    executable = chromium()
    if executable is None:
        raise BrowserUnavailable("no chromium on PATH: apt-get install chromium")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            tab = browser.new_page(viewport={"width": width, "height": 900})
            tab.on("console", lambda m: m.type == "error" and errors.append(m.text))
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(Path(page).resolve().as_uri())
            tab.wait_for_load_state("load")
            charts = tab.evaluate(CHARTS_JS)
            if interact is not None:
                interact(tab)
            if png is not None:
                Path(png).parent.mkdir(parents=True, exist_ok=True)
                whole = tab.evaluate("() => document.documentElement.scrollHeight")
                clip = {"x": 0, "y": 0, "width": width, "height": min(whole, height or whole)}
                tab.screenshot(path=str(png), full_page=True, clip=clip)
        finally:
            browser.close()
    return Rendered(errors=errors, charts=charts)
