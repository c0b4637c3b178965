"""Open a page in a real headless Chromium (Debian's package, driven by Playwright) and report what it shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(page_file: Path, screenshot: Path) -> dict:
    """Load ``page_file``; return the images' natural widths, the section ids, every URL requested other than the
    page itself, and save a full-page screenshot."""
    if CHROMIUM is None:  # a missing browser fails: a skipped page check proves nothing
        pytest.fail("Chromium is not installed: `apt-get install chromium` (.ci/run does this when it is missing)")
    from playwright import sync_api
    requested: list[str] = []
    url = page_file.resolve().as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda r: requested.append(r.url) if r.url != url and not r.url.startswith("data:")
                    else None)
            page.goto(url, wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            sections = page.evaluate("Array.from(document.querySelectorAll('section')).map(s => s.id)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"widths": widths, "sections": sections, "requested": requested}
