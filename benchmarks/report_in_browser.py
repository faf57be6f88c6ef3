"""Open a generated HTML report in headless Chromium (Playwright's Python API driving the system browser) and
say what a reader gets: every figure loaded, no console error, the tables present; optionally a screenshot of
the first screen.

    python benchmarks/report_in_browser.py REPORT.html [--screenshot first_screen.png]

Needs ``pip install playwright`` and a Chromium (Debian: ``apt-get install chromium``); no browser download.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The system Chromium's executable, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_report(html: Path, screenshot: Path | None = None, browser: str | None = None) -> dict[str, Any]:
    """What headless Chromium sees in ``html``: figures (and how many loaded), console errors, tables."""
    from playwright.sync_api import sync_playwright

    exe = browser or find_browser()
    if exe is None:
        raise RuntimeError("no Chromium found (apt-get install chromium)")
    errors: list[str] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(html).resolve().as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({src: e.src.slice(0, 40), ok: e.complete && e.naturalWidth > 0}))")
        tables = page.eval_on_selector_all("table", "els => els.map(e => e.rows.length)")
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent.trim())")
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        b.close()
    return {"images": len(images), "images_loaded": sum(i["ok"] for i in images),
            "broken": [i["src"] for i in images if not i["ok"]], "console_errors": errors,
            "tables": len(tables), "table_rows": tables, "sections": headings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path)
    args = ap.parse_args()
    print(json.dumps(check_report(args.report, args.screenshot), indent=1))


if __name__ == "__main__":
    main()
