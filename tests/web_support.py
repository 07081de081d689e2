"""A real Chromium for the admin page tests: Debian's /usr/bin/chromium driven by playwright.

Playwright's own browser download (`playwright install`) is not used: CI installs the distribution
package with `.ci/install-browser`. Where the browser is missing the tests skip, unless
CHANNELD_REQUIRE_BROWSER is set (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

# The dev extra brings playwright; without it the browser tests are skipped at collection.
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed: pip install -e '.[dev]'"
)
expect = playwright_api.expect
Page = playwright_api.Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 10_000  # generous for busy CI machines; every wait ends as soon as its condition holds


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CHANNELD_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (CHANNELD_REQUIRE_BROWSER is set)")
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium, closed after the test."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(
            f"no Chromium at {CHROMIUM}: run .ci/install-browser (apt-get install chromium)"
        )
    expect.set_options(timeout=WAIT_MS)
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def colour_name(css_colour: str) -> str:
    """Names a computed `rgb(r, g, b)` the way a person would describe a status dot."""
    r, g, b = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    if max(r, g, b) - min(r, g, b) < 40:
        return "grey"
    if g > r and g > b:
        return "green"
    if r > b and g > 120:
        return "amber"
    if r > g and r > b:
        return "red" if r > 180 else "dark red"
    return css_colour


async def dot_colour(dot: Any) -> str:
    """The rendered colour of a status dot."""
    return colour_name(await dot.evaluate("node => getComputedStyle(node).backgroundColor"))
